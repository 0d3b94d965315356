-- job_route (read only): where an asr_partial of a job goes.
--
-- KEYS[1] job hash           P..job:<job_id>
-- ARGV[1] node id
--
-- Returns JSON {status="ok", task_id, spec} when the node holds the job, else {status="stale"}.

local j = redis.call('HMGET', KEYS[1], 'task', 'node', 'state')
if j[2] ~= ARGV[1] or j[3] ~= 'assigned' then
  return cjson.encode({ status = 'stale' })
end
local spec = redis.call('HGET', P .. 'task:' .. j[1], 'spec')
return cjson.encode({ status = 'ok', task_id = j[1], spec = spec })
