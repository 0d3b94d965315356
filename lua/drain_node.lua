-- drain_node: the node takes no new jobs; its in-flight jobs finish normally.
--
-- KEYS[1] node hash          P..node:<id>
-- ARGV[1] node id            ARGV[2] connection id
--
-- Returns JSON {status="draining"}, or {status="not_registered"}.

local n = redis.call('HMGET', KEYS[1], 'state', 'conn', 'class')
if n[1] ~= 'online' or n[2] ~= ARGV[2] then
  return cjson.encode({ status = 'not_registered' })
end
redis.call('HSET', KEYS[1], 'draining', '1')
-- Out of its class index (no new jobs); its card and its class stay while it is online.
if n[3] then redis.call('ZREM', P .. 'class:' .. n[3], ARGV[1]) end
return cjson.encode({ status = 'draining' })
