-- dispatch_task: creates a task on its first call and assigns it to one node as a new job attempt,
-- or leaves it waiting for a free slot.
--
-- KEYS[1] task hash          P..task:<task_id>
-- KEYS[2] payload string     P..payload:<task_id>
-- KEYS[3] waiting zset       P..waiting        (task → time of its next dispatch try)
-- KEYS[4] deadlines zset     P..deadlines      (job → deadline)
-- KEYS[5] liveness zset      P..alive
-- KEYS[6] pool set           P..pool:<src>><tgt>  (the classes serving the pair)
-- KEYS[7] node hash          P..node:<node_id>  (P..node: when ARGV[3] is '')
-- ARGV[1] task id            ARGV[2] expected attempt (attempts made so far; 0 for a new task)
-- ARGV[3] node id, or '' when there is no candidate   ARGV[4] new job id
-- ARGV[5] job timeout ms     ARGV[6] task spec JSON on the first call, '' afterwards
-- ARGV[7] payload (first call)   ARGV[8] ttl ms of task, job and payload keys
-- ARGV[9] max attempts (first call)   ARGV[10] dispatch wait ms (first call)
-- ARGV[11] retry ms: when the task waits, how soon a sweep tries it again
-- ARGV[12] '' for a new task; for a task moving in from another cell (task_move.lua), the end of
--          its dispatch wait (ms): it keeps its attempts (ARGV[2]) and its wait
--
-- Returns JSON {status=…}:
--   assigned  {attempt, job_id}          the node's slot is taken; send job_assign
--   refused   {reason}                   the node cannot take it (dead, draining, full, wrong pair,
--                                        already tried); the task waits, try another node
--   waiting                              no node given; the task waits for a slot
--   failed    {code, spec}               no node given and the dispatch wait is over
--   duplicate {state}                    a task with this id exists, in `state` (first call only;
--                                        a record left by an earlier move out of this cell does
--                                        not count)
--   stale                                the task is not waiting at this attempt (someone else
--                                        dispatched it, or it ended)
--
-- Safe to re-run: the same call sent again after its reply was lost (same new job id, ARGV[4])
-- answers what it did the first time — `assigned` with that job, or `waiting` for the task it
-- created — instead of `duplicate`/`stale`, so the gateway still sends the job or announces the task.

local tid, node = ARGV[1], ARGV[3]
local expected = tonumber(ARGV[2])
local ttl = tonumber(ARGV[8])
local now = now_ms()
local creating = ARGV[6] ~= ''
local moved_in = ARGV[12] ~= ''

-- t: state, attempt, tried, wait_until, spec, call, job — one read serves the replay check, the
-- duplicate check and the fence. A new task is written once, below, in the state this call leaves
-- it in (the common path creates and assigns it with one HSET).
local t = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'tried', 'wait_until', 'spec', 'call', 'job')
if t[1] and t[6] == ARGV[4] then
  if t[1] == 'assigned' and t[7] == ARGV[4] then
    return cjson.encode({ status = 'assigned', attempt = tonumber(t[2]), job_id = ARGV[4] })
  end
  if creating then return cjson.encode({ status = 'waiting' }) end
end
if creating then
  if t[1] and not (moved_in and t[1] == 'moved') then
    return cjson.encode({ status = 'duplicate', state = t[1] })
  end
  local wait_until = moved_in and ARGV[12] or tostring(now + tonumber(ARGV[10]))
  t = { 'waiting', ARGV[2], '', wait_until, ARGV[6] }
elseif t[1] ~= 'waiting' or tonumber(t[2]) ~= expected then
  return cjson.encode({ status = 'stale' })
end

-- Writes a new task's fields in `state`; the payload only while the task can still run.
local function create(state, extra)
  -- A task moving back into a cell it left replaces its `moved` record.
  if moved_in then redis.call('HDEL', KEYS[1], 'moved_to', 'job', 'node', 'code') end
  redis.call('HSET', KEYS[1], 'state', state, 'call', ARGV[4], 'attempt', t[2], 'tried', '', 'spec', ARGV[6],
    'max_attempts', ARGV[9], 'wait_until', t[4], 'created_ms', now, 'ttl_ms', ttl, unpack(extra))
  redis.call('PEXPIRE', KEYS[1], ttl)
  if state ~= 'failed' then redis.call('SET', KEYS[2], ARGV[7], 'PX', ttl) end
end

local function wait(reply)
  if creating then create('waiting', {}) end
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[11]), tid)
  return cjson.encode(reply)
end

if node == '' then
  if now < tonumber(t[4]) then
    return wait({ status = 'waiting' })
  end
  if creating then
    create('failed', { 'code', 'NO_AVAILABLE_NODE' })
  else
    redis.call('HSET', KEYS[1], 'state', 'failed', 'code', 'NO_AVAILABLE_NODE')
    redis.call('ZREM', KEYS[3], tid)
    redis.call('DEL', KEYS[2])
  end
  return cjson.encode({ status = 'failed', code = 'NO_AVAILABLE_NODE', spec = t[5] })
end

local n = redis.call('HMGET', KEYS[7], 'state', 'draining', 'running', 'capacity', 'class')
local refused
if n[1] ~= 'online' then refused = 'offline'
elseif tonumber(redis.call('ZSCORE', KEYS[5], node) or '0') <= now then refused = 'expired'
elseif n[2] ~= '0' then refused = 'draining'
elseif tonumber(n[3]) >= tonumber(n[4]) then refused = 'full'
elseif not n[5] or redis.call('SISMEMBER', KEYS[6], n[5]) == 0 then refused = 'wrong_pair'
elseif contains(t[3], node) then refused = 'already_tried'
end
if refused then
  return wait({ status = 'refused', reason = refused })
end

local attempt = expected + 1
local jid = ARGV[4]
local running = redis.call('HINCRBY', KEYS[7], 'running', 1)
reindex(node, n[5], true, running, tonumber(n[4]))
redis.call('SADD', KEYS[7] .. ':jobs', jid)
redis.call('HSET', P .. 'job:' .. jid, 'task', tid, 'node', node, 'attempt', attempt,
  'state', 'assigned', 'assigned_ms', now)
redis.call('PEXPIRE', P .. 'job:' .. jid, ttl)
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[5]), jid)
local tried = t[3] == '' and node or (t[3] .. ',' .. node)
local assigned = { 'attempt', attempt, 'job', jid, 'node', node, 'tried', tried }
if creating then
  create('assigned', assigned)
else
  redis.call('HSET', KEYS[1], 'state', 'assigned', 'call', ARGV[4], unpack(assigned))
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('ZREM', KEYS[3], tid)
end
return cjson.encode({ status = 'assigned', attempt = attempt, job_id = jid })
