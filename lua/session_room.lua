-- session_room: records the room a session is in, so a resumed session keeps it and its end
-- leaves it.
--
-- KEYS[1] session hash
-- ARGV[1] room code, '' for none
--
-- Returns JSON {status="ok"}, or {status="gone"} when the session is gone.

if redis.call('EXISTS', KEYS[1]) == 0 then return cjson.encode({ status = 'gone' }) end
if ARGV[1] == '' then
  redis.call('HDEL', KEYS[1], 'room')
else
  redis.call('HSET', KEYS[1], 'room', ARGV[1])
end
return cjson.encode({ status = 'ok' })
