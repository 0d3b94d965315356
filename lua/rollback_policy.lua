-- rollback_policy: the role's active version goes back to the one before it.
--
-- KEYS[1] role state hash    <prefix>:{policy}:state:<role>
-- KEYS[2] history list       <prefix>:{policy}:history:<role>
-- KEYS[3] events list        <prefix>:{policy}:events:<role>  (JSON, newest first)
-- ARGV[1] now, ms (the caller's clock)   ARGV[2] who: 'admin' or a gateway id   ARGV[3] events kept
--
-- Returns JSON {status="ok", active=<sha or '' for the embedded default>, version}, or
-- {status="empty"} when there is nothing to go back to.

local previous = redis.call('LPOP', KEYS[2])
if not previous then
  return cjson.encode({ status = 'empty' })
end
redis.call('HSET', KEYS[1], 'active', previous)
redis.call('LPUSH', KEYS[3], cjson.encode({ at_ms = tonumber(ARGV[1]), change = 'rollback', sha256 = previous, by = ARGV[2] }))
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
return cjson.encode({ status = 'ok', active = previous, version = version })
