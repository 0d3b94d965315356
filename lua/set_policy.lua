-- set_policy: an operator pushes a policy version (admin API), or promotes the shadow: it becomes a
-- role's active or shadow version on every gateway, which poll the role's state.
--
-- KEYS[1] role state hash    <prefix>:{policy}:state:<role>   (active, shadow, version)
-- KEYS[2] history list       <prefix>:{policy}:history:<role> (earlier active shas, newest first)
-- KEYS[3] blob string        <prefix>:{policy}:blob:<sha>     (the component's bytes)
-- ARGV[1] slot: 'active' or 'shadow'
-- ARGV[2] sha256, or '' for none (active: the embedded default; shadow: no shadow)
-- ARGV[3] component bytes, or '' when the blob is stored already or the sha is ''
-- ARGV[4] history length kept
--
-- Returns JSON {status="ok", version}, or {status="missing_blob"} when the sha has no stored bytes.

local slot, sha = ARGV[1], ARGV[2]
if sha ~= '' then
  if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3]) end
  if redis.call('EXISTS', KEYS[3]) == 0 then
    return cjson.encode({ status = 'missing_blob' })
  end
end
if slot == 'active' then
  local previous = redis.call('HGET', KEYS[1], 'active') or ''
  if previous ~= sha then
    redis.call('LPUSH', KEYS[2], previous)
    redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
  end
  -- A version made active (pushed again, or its shadow promoted) stops shadowing itself: it would
  -- run every decision twice and report agreement with itself.
  if redis.call('HGET', KEYS[1], 'shadow') == sha then redis.call('HSET', KEYS[1], 'shadow', '') end
end
redis.call('HSET', KEYS[1], slot, sha)
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
return cjson.encode({ status = 'ok', version = version })
