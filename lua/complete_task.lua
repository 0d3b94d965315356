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
-- ARGV[6] '1' with the fair queue (scheduler.fair_queue)
-- ARGV[7] a new job id's prefix (job-<tag>-<hex>), for a handoff   ARGV[8] job timeout ms
--
-- Returns JSON {status=…}:
--   completed / failed {task_id, attempt, spec, handoff, wake, unheld}   the task ended; deliver
--                                        to spec.recipients. handoff: the waiting task of the pool
--                                        that took the freed slot ({task_id, node_id, attempt,
--                                        job_id, spec, payload}; send it its job) or null; wake
--                                        (without the fair queue): the queue's head when this result
--                                        freed a full node's slot, or ''; unheld: the task of the
--                                        same tenant its cap held, now back in its queue (lib.lua,
--                                        count_running), or ''. Dispatch wake and unheld. A replayed
--                                        call has no spec: the ended task no longer keeps it
--   unknown                              no such task (never existed or expired)
--   stale {state}                        another node's or attempt's job, or the job has already
--                                        ended (late result of a superseded attempt, or a second
--                                        result); dropped and counted by the caller
--
-- Commands on the common path: GET task, TIME, SET task, ZREM deadline, HMGET node, HSET node,
-- ZADD class, ZRANGE queue (with the fair queue; a handoff adds the head's record and slot);
-- HINCRBY running for a task with a tenant, ZRANGE held for one with a cap.

local jid, node = ARGV[1], ARGV[2]
local tid = task_of(jid)
local t = tid and load_task(tid)
if not t then
  return cjson.encode({ status = 'unknown' })
end
if t.call == ARGV[5] then
  return cjson.encode({ status = t.state, task_id = tid, attempt = t.attempt, wake = '', unheld = '',
    handoff = cjson.null })
end
if not runs_job(t, jid, node, ARGV[3]) then
  return cjson.encode({ status = 'stale', state = holds(t, jid) and t.state or 'superseded' })
end

local outcome = ARGV[4]
t.call = ARGV[5]
local unheld = count_running(t, -1) or ''
-- How long the node took, for the admin view (two timestamps would cost 40 bytes per task).
local now = now_ms()
end_task(tid, t, outcome, { took_ms = now - (t.assigned_ms or 0) })
redis.call('ZREM', KEYS[3], jid)
local was_full, slot = free_slot(node, jid)

-- The freed slot goes to the task the fair queue of this task's pool says is next (lib.lua,
-- fair_head) — the node serves that pool — in this call: the handoff, which the caller sends.
-- Without the fair queue (ARGV[6] '0') a task only waits while nodes are full, so the queue's head
-- is only woken (`wake`, dispatched by the caller) when this node was full.
local handoff, wake = cjson.null, ''
if t.pool and ARGV[6] == '1' and slot then
  local head, h = fair_head(t.pool, node, math.huge, nil)
  if head then
    handoff = hand_off(head, h, node, slot.cid, slot.cap, slot.jobs, ARGV[7] .. ':' .. head, now,
      tonumber(ARGV[8]))
    if head == unheld then unheld = '' end
  end
elseif t.pool and was_full then
  wake = redis.call('ZRANGE', pool_queue(t.pool), 0, 0)[1] or ''
end
return cjson.encode({ status = outcome, task_id = tid, attempt = t.attempt, spec = t.spec, wake = wake,
  unheld = unheld, handoff = handoff })
