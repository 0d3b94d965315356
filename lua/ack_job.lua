-- ack_job: the node accepted (job_ack) or started (job_started) a job.
--
-- KEYS[1] job hash           P..job:<job_id>
-- ARGV[1] node id            ARGV[2] attempt id, or ''
-- ARGV[3] field to stamp: 'acked_ms' or 'started_ms'
--
-- Returns JSON {status="ok", task_id, spec, assigned_ms} or {status="stale"} when the node does not
-- hold this job.

local j = redis.call('HMGET', KEYS[1], 'task', 'node', 'attempt', 'state', 'assigned_ms')
if j[2] ~= ARGV[1] or j[4] ~= 'assigned' or (ARGV[2] ~= '' and ARGV[2] ~= j[3]) then
  return cjson.encode({ status = 'stale' })
end
redis.call('HSET', KEYS[1], ARGV[3], now_ms())
local spec = redis.call('HGET', P .. 'task:' .. j[1], 'spec')
return cjson.encode({ status = 'ok', task_id = j[1], spec = spec,
  assigned_ms = tonumber(j[5]) })
