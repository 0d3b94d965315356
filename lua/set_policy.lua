-- set_policy: an operator pushes a policy version (admin API), or promotes the shadow: it becomes a
-- role's active or shadow version on every gateway, which poll the role's state.
--
-- KEYS[1] role state hash    <prefix>:{policy}:state:<role>   (active, shadow, version)
-- KEYS[2] history list       <prefix>:{policy}:history:<role> (earlier active shas, newest first)
-- KEYS[3] blob string        <prefix>:{policy}:blob:<sha>     (the component's bytes)
-- ARGV[1] slot: 'active', 'shadow', 'canary', or 'canary_off' (end the canary ARGV[2] if it still
--         is the role's, noting ARGV[6] as why)
-- ARGV[2] sha256, or '' for none (active: the embedded default; shadow, canary: none)
-- ARGV[3] component bytes, or '' when the blob is stored already or the sha is ''
-- ARGV[4] history length kept
-- ARGV[5] canary: percent of the calls it decides   ARGV[6] canary_off: the reason
--
-- Returns JSON {status="ok", version}, {status="missing_blob"} when the sha has no stored bytes, or
-- {status="stale"} for a canary_off of a canary that is no longer the role's.

local slot, sha = ARGV[1], ARGV[2]
if slot == 'canary_off' then
  if redis.call('HGET', KEYS[1], 'canary') ~= sha or sha == '' then
    return cjson.encode({ status = 'stale' })
  end
  redis.call('HSET', KEYS[1], 'canary', '', 'canary_rolled_back', sha, 'canary_reason', ARGV[6])
  return cjson.encode({ status = 'ok', version = redis.call('HINCRBY', KEYS[1], 'version', 1) })
end
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
  -- A version made active (pushed again, or its shadow or canary promoted) stops shadowing or
  -- canarying itself: it would run every decision twice and report agreement with itself.
  if redis.call('HGET', KEYS[1], 'shadow') == sha then redis.call('HSET', KEYS[1], 'shadow', '') end
  if redis.call('HGET', KEYS[1], 'canary') == sha then redis.call('HSET', KEYS[1], 'canary', '') end
end
if slot == 'canary' then redis.call('HSET', KEYS[1], 'canary_share', ARGV[5]) end
redis.call('HSET', KEYS[1], slot, sha)
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
return cjson.encode({ status = 'ok', version = version })
