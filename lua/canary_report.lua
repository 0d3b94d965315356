-- canary_report: a gateway adds what it counted of a role's canary and active version since its
-- last report to the fleet's totals, and gets the totals back (src/policy/canary.rs).
--
-- KEYS[1] role state hash    <prefix>:{policy}:state:<role>          (canary)
-- KEYS[2] canary totals hash <prefix>:{policy}:canary_totals:<role>  (set_policy empties it for a
--         new canary; `c.` counts are the canary's, `a.` the active version's over the same window)
-- ARGV[1] the canary's sha256 as this gateway runs it
-- ARGV[2] ttl of the totals, ms (a canary nobody reports on leaves nothing behind)
-- ARGV[3..] field, count, field, count… (counts to add; may be none)
--
-- Returns JSON {status="ok", totals={field=count…}}, or {status="stale"} when ARGV[1] is no longer
-- the role's canary (nothing is added).

if redis.call('HGET', KEYS[1], 'canary') ~= ARGV[1] or ARGV[1] == '' then
  return cjson.encode({ status = 'stale' })
end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
end
local totals = {}
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  totals[flat[i]] = tonumber(flat[i + 1])
end
if #flat > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return cjson.encode({ status = 'ok', totals = totals })
