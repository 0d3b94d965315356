-- load_task (read only): a waiting task's attempt, tried nodes, spec and payload, for a
-- re-dispatch.
--
-- KEYS[1] task               P..task:<task_id>
--
-- Returns JSON {status="waiting", attempt, tried, spec, payload}, {status="missing"}, or
-- {status=<its state>} when it is not waiting.

local t = load_task(string.match(KEYS[1], ':task:(.+)$'))
if not t then return cjson.encode({ status = 'missing' }) end
if t.state ~= 'waiting' then return cjson.encode({ status = t.state }) end
return cjson.encode({ status = 'waiting', attempt = t.attempt, tried = t.tried, spec = t.spec,
  payload = t.payload })
