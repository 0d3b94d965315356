-- load_task (read only): what a gateway needs to dispatch a waiting task again.
--
-- KEYS[1] task hash          P..task:<task_id>
-- KEYS[2] payload string     P..payload:<task_id>
--
-- Returns JSON {status="waiting", attempt, tried, spec, payload}, or {status=<state>} when the task
-- is not waiting (assigned, completed, failed) or {status="missing"}.

local t = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'tried', 'spec')
if not t[1] then return cjson.encode({ status = 'missing' }) end
if t[1] ~= 'waiting' then return cjson.encode({ status = t[1] }) end
return cjson.encode({ status = 'waiting', attempt = tonumber(t[2]), tried = t[3], spec = t[4],
  payload = redis.call('GET', KEYS[2]) or '' })
