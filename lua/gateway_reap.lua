-- gateway_reap: finds gateways whose presence expired. Exactly one caller gets each newly dead
-- gateway (it detaches that gateway's sessions); every caller claims the inboxes of gateways dead
-- for less than the retention time (frames sent there after the death still reach their sessions).
--
-- KEYS[1] live gateways zset   KEYS[2] dead gateways zset
-- ARGV[1] most gateways to reap per call     ARGV[2] retention ms of dead gateways
--
-- Returns JSON {status="ok", at (now, ms: the fence of the takeover's detaches), reaped=[gateway…] (this
-- caller's), dead=[gateway…] (all recently dead), forgotten=[gateway…] (past retention: the caller
-- deletes their keys)}.

local now = now_ms()
local reaped = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, gw in ipairs(reaped) do
  redis.call('ZREM', KEYS[1], gw)
  redis.call('ZADD', KEYS[2], now, gw)
end
local cutoff = now - tonumber(ARGV[2])
local forgotten = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff, 'LIMIT', 0, tonumber(ARGV[1]))
if #forgotten > 0 then redis.call('ZREM', KEYS[2], unpack(forgotten)) end
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], cutoff, '+inf', 'LIMIT', 0, tonumber(ARGV[1]))
return cjson.encode({ status = 'ok', at = now, reaped = reaped, dead = dead, forgotten = forgotten })
