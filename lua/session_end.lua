-- session_end: a session ends for good: closed by its client, or its resume grace ran out.
--
-- KEYS[1] session hash       KEYS[2] backlog list
-- ARGV[1] connection id: only the socket that attached it last may end it
-- ARGV[2] '1': end it only if it is still detached (the grace timer); '0': end it now (session_close)
--
-- Returns JSON {status="ended", room} (the room it was in, '' for none: the caller leaves it), or
-- {status="stale"} (resumed by another socket, or already gone).

local s = redis.call('HMGET', KEYS[1], 'conn', 'state', 'room')
if s[1] ~= ARGV[1] or (ARGV[2] == '1' and s[2] ~= 'detached') then
  return cjson.encode({ status = 'stale' })
end
redis.call('DEL', KEYS[1], KEYS[2])
return cjson.encode({ status = 'ended', room = s[3] or '' })
