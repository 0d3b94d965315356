-- node_offline: a node's socket closed. Its in-flight jobs are released at once (new attempts).
--
-- KEYS[1] node hash          P..node:<id>
-- ARGV[1] node id            ARGV[2] connection id (only that connection may take the node down)
-- ARGV[3] retention ms       how long the offline record (id, secret) is kept
--
-- Returns JSON {status="offline", released={requeued, failed, cancel}},
-- or {status="stale"} when the node is not online under this connection (it re-registered).

local n = redis.call('HMGET', KEYS[1], 'state', 'conn')
if n[1] ~= 'online' or n[2] ~= ARGV[2] then
  return cjson.encode({ status = 'stale' })
end
local out = released()
take_offline(ARGV[1], tonumber(ARGV[3]), now_ms(), out)
return cjson.encode({ status = 'offline', released = out })
