-- admission_state (read only): what the admission policy sees of a new task's cell: its tenant's
-- waiting (queued or held) and running tasks, and its pool's queue (lib.lua, the fair queue).
--
-- KEYS[1] fair hash          P..fair
-- ARGV[1] tenant ('' for none)   ARGV[2] pool
--
-- Returns JSON {status="ok", tenant_waiting, tenant_running, pool_waiting}.

local f = redis.call('HMGET', KEYS[1], 'n:' .. ARGV[1], 'r:' .. ARGV[1], 'p:' .. ARGV[2])
local function count(v) return math.max(0, tonumber(v) or 0) end
return cjson.encode({ status = 'ok', tenant_waiting = count(f[1]), tenant_running = count(f[2]),
  pool_waiting = count(f[3]) })
