-- complete_task: a node's result for a job. Fenced: only the node and attempt that hold the job,
-- and only once; the first result wins.
--
-- KEYS[1] job hash           P..job:<job_id>
-- KEYS[2] node hash          P..node:<node_id>
-- KEYS[3] waiting zset       P..waiting
-- ARGV[1] job id             ARGV[2] node id
-- ARGV[3] attempt id, or '' when the node did not send one
-- ARGV[4] outcome: 'completed' or 'failed'
-- ARGV[5] call id: new for every call; the same call sent again after its reply was lost answers
--         what it did the first time (a node's second result is a new call, and stale)
--
-- Returns JSON {status=…}:
--   completed / failed {task_id, attempt, spec, wake}   the task ended; deliver to spec.recipients;
--                                        wake is the oldest waiting task of the cell, or '' (a slot
--                                        just freed, so the caller may dispatch it now)
--   unknown                              no such job (never existed or expired)
--   stale {state}                        another node's or attempt's job, or the job has already
--                                        ended (late result of a superseded attempt, or a second
--                                        result); dropped and counted by the caller

local jid, node = ARGV[1], ARGV[2]
local j = redis.call('HMGET', KEYS[1], 'task', 'node', 'attempt', 'state', 'call')
if not j[1] then
  return cjson.encode({ status = 'unknown' })
end
if j[5] == ARGV[5] then
  local spec = redis.call('HGET', P .. 'task:' .. j[1], 'spec')
  return cjson.encode({ status = j[4], task_id = j[1], attempt = tonumber(j[3]), spec = spec, wake = '' })
end
if j[2] ~= node or (ARGV[3] ~= '' and ARGV[3] ~= j[3]) or j[4] ~= 'assigned' then
  return cjson.encode({ status = 'stale', state = j[4] })
end

local outcome = ARGV[4]
local tid = j[1]
local tkey = P .. 'task:' .. tid
local t = redis.call('HMGET', tkey, 'spec', 'ttl_ms')
redis.call('HSET', KEYS[1], 'state', outcome, 'done_ms', now_ms(), 'call', ARGV[5])
redis.call('ZREM', P .. 'deadlines', jid)
redis.call('SREM', KEYS[2] .. ':jobs', jid)
local n = redis.call('HMGET', KEYS[2], 'state', 'draining', 'class', 'running', 'capacity')
local running = tonumber(n[4] or '0')
if running > 0 then
  running = redis.call('HINCRBY', KEYS[2], 'running', -1)
end
if n[3] then reindex(node, n[3], n[1] == 'online' and n[2] == '0', running, tonumber(n[5]) or 1) end
redis.call('HSET', tkey, 'state', outcome)
redis.call('PEXPIRE', tkey, t[2])
redis.call('DEL', P .. 'payload:' .. tid)

local wake = redis.call('ZRANGE', KEYS[3], 0, 0)[1] or ''
return cjson.encode({ status = outcome, task_id = tid, attempt = tonumber(j[3]), spec = t[1],
  wake = wake })
