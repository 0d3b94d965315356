-- room_leave: a session leaves a room; the last one out closes it.
--
-- KEYS[1] room hash          KEYS[2] members hash
-- ARGV[1] session id
--
-- Returns JSON {status="ok", members=[member JSON…]} (those left), or {status="NOT_A_MEMBER"}.

if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then
  return cjson.encode({ status = 'not_a_member' })
end
local members = redis.call('HVALS', KEYS[2])
if #members == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
end
return cjson.encode({ status = 'ok', members = members })
