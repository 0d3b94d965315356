-- gateway_presence: a gateway says it is alive; the registry lets every gateway find dead ones.
--
-- KEYS[1] live gateways zset   <prefix>:{gw}:gateways   (gateway → presence deadline)
-- KEYS[2] dead gateways zset   <prefix>:{gw}:dead       (gateway → time it was found dead)
-- ARGV[1] gateway id           ARGV[2] liveness window ms
--
-- Returns JSON {status="added"} when the gateway was not in the registry (first call, or it had
-- been taken for dead: the caller attaches its sessions again), {status="present"} otherwise.

local added = redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return cjson.encode({ status = added == 1 and 'added' or 'present' })
