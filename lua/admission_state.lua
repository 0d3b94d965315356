-- admission_state (read only): what the admission policy sees of a new task's cell: its tenant's
-- waiting (queued or held) and running tasks, and its pool's queue (lib.lua, the fair queue).
--
-- KEYS[1] fair hash          P..fair
-- KEYS[2] queue zset         P..queue:<pool>
-- ARGV[1] tenant ('' for none)
--
-- Returns JSON {status="ok", tenant_waiting, tenant_running, pool_waiting}.

local f = redis.call('HMGET', KEYS[1], 'n:' .. ARGV[1], 'r:' .. ARGV[1])
return cjson.encode({ status = 'ok', tenant_waiting = math.max(0, tonumber(f[1]) or 0),
  tenant_running = math.max(0, tonumber(f[2]) or 0), pool_waiting = redis.call('ZCARD', KEYS[2]) })
