-- rollback_policy: the role's active version goes back to the one before it.
--
-- KEYS[1] role state hash    <prefix>:{policy}:state:<role>
-- KEYS[2] history list       <prefix>:{policy}:history:<role>
--
-- Returns JSON {status="ok", active=<sha or '' for the embedded default>, version}, or
-- {status="empty"} when there is nothing to go back to.

local previous = redis.call('LPOP', KEYS[2])
if not previous then
  return cjson.encode({ status = 'empty' })
end
redis.call('HSET', KEYS[1], 'active', previous)
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
return cjson.encode({ status = 'ok', active = previous, version = version })
