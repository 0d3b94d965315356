-- drain_node: the node takes no new jobs; its in-flight jobs finish normally.
--
-- KEYS[1] node hash          P..node:<id>
-- ARGV[1] node id            ARGV[2] connection id
--
-- Returns JSON {status="draining"}, or {status="NODE_NOT_REGISTERED"}.

local n = redis.call('HMGET', KEYS[1], 'state', 'conn')
if n[1] ~= 'online' or n[2] ~= ARGV[2] then
  return cjson.encode({ status = 'NODE_NOT_REGISTERED' })
end
redis.call('HSET', KEYS[1], 'draining', '1')
reindex_node(ARGV[1])
return cjson.encode({ status = 'draining' })
