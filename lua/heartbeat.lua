-- heartbeat: a node reports it is alive, its resource usage and possibly new capabilities.
--
-- KEYS[1] node hash          P..node:<id>
-- KEYS[2] liveness zset      P..alive
-- ARGV[1] node id            ARGV[2] connection id
-- ARGV[3] liveness window ms
-- ARGV[4] cpu %  ARGV[5] gpu %  ARGV[6] gpu mem %  ARGV[7] mem %  ARGV[8] gpu queue length
-- ARGV[9] language pairs, or '-' when the heartbeat carried no capabilities
-- ARGV[10] ready service types, or '-'
--
-- Returns JSON {status="ok"}, or {status="not_registered"} when the node is unknown, offline,
-- or registered by another connection since (the node must send node_register again).

local id = ARGV[1]
local n = redis.call('HMGET', KEYS[1], 'state', 'conn', 'pairs', 'running', 'capacity', 'draining', 'class',
  'ready', 'labels')
if n[1] ~= 'online' or n[2] ~= ARGV[2] then
  return cjson.encode({ status = 'not_registered' })
end

local now = now_ms()
local ready = ARGV[10] ~= '-' and ARGV[10] or n[8]
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), id)
redis.call('HSET', KEYS[1], 'last_hb', now, 'cpu', ARGV[4], 'gpu', ARGV[5], 'gpu_mem', ARGV[6],
  'mem', ARGV[7], 'gpu_queue', ARGV[8], 'ready', ready)
local node_card = card(n[5], { ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8] }, ready, n[9], now)

if ARGV[9] ~= '-' and ARGV[9] ~= n[3] then
  -- Another shape: leave the old class, join the new one at the current load.
  local cid = class_of(ARGV[9])
  if n[7] then leave_class(id, n[7]) end
  redis.call('HSET', KEYS[1], 'pairs', ARGV[9], 'class', cid)
  join_class(id, cid, ARGV[9], node_card)
  reindex(id, cid, n[6] == '0', tonumber(n[4]), tonumber(n[5]))
elseif n[7] then
  redis.call('HSET', P .. 'class:' .. n[7] .. ':info', 'n:' .. id, node_card)
end

return cjson.encode({ status = 'ok' })
