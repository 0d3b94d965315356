-- register_node: a node connects (or reconnects) and announces its capabilities.
--
-- KEYS[1] node hash          P..node:<id>
-- KEYS[2] liveness zset      P..alive
-- KEYS[3] online node set    P..nodes
-- ARGV[1] node id            ARGV[2] secret presented ('' = none)
-- ARGV[3] new secret         ARGV[4] connection id (fences later calls of this socket)
-- ARGV[5] gateway id         ARGV[6] capacity (slots)
-- ARGV[7] language pairs     'src>tgt,…' sorted: the pools the node joins, through its class
-- ARGV[8] liveness window ms (3 × heartbeat interval)
-- ARGV[9] ready service types 'asr,nmt,…'   ARGV[10] labels JSON   ARGV[11] node info JSON
--
-- Returns JSON {status="registered", released={requeued, failed, cancel}}: a node that was still
-- online under an earlier connection lost that connection's jobs, which go back to their tasks.
-- Errors (as status): node_id_conflict — the id is live and the secret does not match.

local id = ARGV[1]
local now = now_ms()
local cur = redis.call('HMGET', KEYS[1], 'state', 'secret', 'conn')
-- The same registration again (its reply was lost and the client re-sent it): connection ids
-- are new for every registration, so this one is already done.
if cur[1] == 'online' and cur[3] == ARGV[4] then
  return cjson.encode({ status = 'registered', released = released() })
end
local deadline = tonumber(redis.call('ZSCORE', KEYS[2], id) or '0')
local live = cur[1] == 'online' and deadline > now

if live and ARGV[2] ~= cur[2] then
  return cjson.encode({ status = 'node_id_conflict' })
end

local out = released()
local cid = class_of(ARGV[7])
if cur[1] == 'online' then
  take_offline(id, 0, now, out)
end

redis.call('HSET', KEYS[1],
  'id', id, 'secret', ARGV[3], 'conn', ARGV[4], 'gateway', ARGV[5],
  'state', 'online', 'draining', '0', 'capacity', ARGV[6], 'running', 0, 'jobs', '[]',
  'pairs', ARGV[7], 'class', cid, 'ready', ARGV[9], 'labels', ARGV[10], 'info', ARGV[11],
  'registered_ms', now, 'last_hb', now,
  'cpu', 0, 'gpu', 0, 'gpu_mem', 0, 'mem', 0, 'gpu_queue', 0)
redis.call('PERSIST', KEYS[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[8]), id)
redis.call('SADD', KEYS[3], id)
join_class(id, cid, ARGV[7], card(ARGV[6], { 0, 0, 0, 0, 0 }, ARGV[9], ARGV[10], now))
reindex(id, cid, true, 0, tonumber(ARGV[6]))

return cjson.encode({ status = 'registered', released = out })
