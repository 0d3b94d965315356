-- complete_task: a node's result for a job. Fenced: only the node and attempt that hold the job,
-- and only once; the first result wins.
--
-- KEYS[1] node hash          P..node:<node_id>
-- KEYS[2] waiting zset       P..waiting
-- KEYS[3] deadlines zset     P..deadlines
-- ARGV[1] job id (job-<tag>-<hex>:<task id>)   ARGV[2] node id
-- ARGV[3] attempt id, or '' when the node did not send one
-- ARGV[4] outcome: 'completed' or 'failed'
-- ARGV[5] call id: new for every call; the same call sent again after its reply was lost answers
--         what it did the first time (a node's second result is a new call, and stale)
-- ARGV[6] '1' when the fair queue gates free slots (scheduler.fair_queue_gate)
--
-- Returns JSON {status=…}:
--   completed / failed {task_id, attempt, spec, wake, unheld}   the task ended; deliver to
--                                        spec.recipients; wake is the head of the fair queue of the
--                                        task's pool (lib.lua, enqueue) when this result freed a full
--                                        node's slot (any slot with the gate), or ''; unheld the
--                                        task of the same tenant its cap held, now back in its
--                                        queue (lib.lua, count_running), or ''. Dispatch both. A
--                                        replayed call has no spec: the ended task no longer keeps it
--   unknown                              no such task (never existed or expired)
--   stale {state}                        another node's or attempt's job, or the job has already
--                                        ended (late result of a superseded attempt, or a second
--                                        result); dropped and counted by the caller
--
-- Commands on the common path: GET task, TIME, SET task, ZREM deadline, HMGET node, HSET node,
-- ZADD class (and ZRANGE queue with the gate; HINCRBY running for a task with a tenant, ZRANGE held
-- for one with a cap).

local jid, node = ARGV[1], ARGV[2]
local tid = task_of(jid)
local t = tid and load_task(tid)
if not t then
  return cjson.encode({ status = 'unknown' })
end
if t.call == ARGV[5] then
  return cjson.encode({ status = t.state, task_id = tid, attempt = t.attempt, wake = '', unheld = '' })
end
if not runs_job(t, jid, node, ARGV[3]) then
  return cjson.encode({ status = 'stale', state = holds(t, jid) and t.state or 'superseded' })
end

local outcome = ARGV[4]
t.call = ARGV[5]
local unheld = count_running(t, -1) or ''
-- How long the node took, for the admin view (two timestamps would cost 40 bytes per task).
end_task(tid, t, outcome, { took_ms = now_ms() - (t.assigned_ms or 0) })
redis.call('ZREM', KEYS[3], jid)
local was_full = free_slot(node, jid)

-- The task the fair queue of this task's pool says is next (lib.lua, enqueue): the node that
-- just freed a slot serves that pool. Without the gate a task only waits while nodes are full, so
-- the queue is read only when this node was (no read on the common path); with the gate
-- (ARGV[6] '1') tasks may wait while nodes have free slots, so it is read on every result.
local wake = t.pool and (was_full or ARGV[6] == '1') and redis.call('ZRANGE', P .. 'queue:' .. t.pool, 0, 0)[1] or ''
return cjson.encode({ status = outcome, task_id = tid, attempt = t.attempt, spec = t.spec, wake = wake,
  unheld = unheld })
