-- set_policy: an operator pushes a policy version (admin API) or promotes one, or a gateway ends or
-- promotes a canary on its own: it becomes a role's active, shadow or canary version on every
-- gateway, which poll the role's state. Every change is logged in the role's events list.
--
-- KEYS[1] role state hash    <prefix>:{policy}:state:<role>   (active, shadow, canary, version…)
-- KEYS[2] history list       <prefix>:{policy}:history:<role> (earlier active shas, newest first)
-- KEYS[3] blob string        <prefix>:{policy}:blob:<sha>     (the component's bytes)
-- KEYS[4] events list        <prefix>:{policy}:events:<role>  (JSON, newest first)
-- KEYS[5] canary totals hash <prefix>:{policy}:canary_totals:<role> (emptied for a new canary)
-- ARGV[1] change: 'active', 'shadow', 'canary', 'canary_off' (end the canary ARGV[2] if it still is
--         the role's) or 'canary_promote' (make the canary ARGV[2] active if it still is the role's)
-- ARGV[2] sha256, or '' for none (active: the embedded default; shadow, canary: none)
-- ARGV[3] component bytes, or '' when the blob is stored already or the sha is ''
-- ARGV[4] history length kept      ARGV[5] canary: percent of the calls it decides
-- ARGV[6] why (canary_off, canary_promote; '' otherwise)
-- ARGV[7] now, ms (the caller's clock)   ARGV[8] who: 'admin' or a gateway id
-- ARGV[9] events kept
--
-- Returns JSON {status="ok", version}, {status="missing_blob"} when the sha has no stored bytes, or
-- {status="stale"} for a canary_off or canary_promote of a canary that is no longer the role's.

local change, sha = ARGV[1], ARGV[2]

local function logged()
  local event = { at_ms = tonumber(ARGV[7]), change = change, sha256 = sha, by = ARGV[8] }
  if change == 'canary' then event.share = tonumber(ARGV[5]) end
  if ARGV[6] ~= '' then event.reason = ARGV[6] end
  redis.call('LPUSH', KEYS[4], cjson.encode(event))
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[9]) - 1)
  return cjson.encode({ status = 'ok', version = redis.call('HINCRBY', KEYS[1], 'version', 1) })
end

if change == 'canary_off' or change == 'canary_promote' then
  if sha == '' or redis.call('HGET', KEYS[1], 'canary') ~= sha then
    return cjson.encode({ status = 'stale' })
  end
end
if change == 'canary_off' then
  redis.call('HSET', KEYS[1], 'canary', '', 'canary_rolled_back', sha, 'canary_reason', ARGV[6])
  return logged()
end
local slot = change == 'canary_promote' and 'active' or change
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
if slot == 'canary' then
  redis.call('HSET', KEYS[1], 'canary_share', ARGV[5])
  redis.call('DEL', KEYS[5])
end
redis.call('HSET', KEYS[1], slot, sha)
return logged()
