-- room_speak: a member speaks: the room's members, for the room-routing policy; renews the idle
-- ttl (speaking is activity).
--
-- KEYS[1] room hash          KEYS[2] members hash
-- ARGV[1] session id         ARGV[2] idle ttl ms
--
-- Returns JSON {status="ok", members=[member JSON…]}, or {status="ROOM_NOT_FOUND"} /
-- {status="NOT_A_MEMBER"} (the membership is checked on every utterance).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return cjson.encode({ status = 'room_not_found' })
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  return cjson.encode({ status = 'not_a_member' })
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return cjson.encode({ status = 'ok', members = redis.call('HVALS', KEYS[2]) })
