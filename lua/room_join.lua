-- room_join: a session joins a room (or, already a member, changes its member record).
--
-- KEYS[1] room hash          KEYS[2] members hash
-- ARGV[1] session id         ARGV[2] member JSON          ARGV[3] idle ttl ms
-- ARGV[4] mode: 'join' (a new member; ROOM_FULL / ALREADY_IN_ROOM apply) or 'update' (a member's
--         record changes, e.g. room_set_lang; NOT_A_MEMBER applies)
--
-- Returns JSON {status="ok", room_id, members=[member JSON…]}, or {status=<error>} with
-- ROOM_NOT_FOUND, ROOM_FULL, ALREADY_IN_ROOM, NOT_A_MEMBER. Activity renews the idle ttl.

local room = redis.call('HMGET', KEYS[1], 'room_id', 'max_members')
if not room[1] then
  return cjson.encode({ status = 'room_not_found' })
end
local member = redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1
if ARGV[4] == 'join' then
  if member then return cjson.encode({ status = 'already_in_room' }) end
  if redis.call('HLEN', KEYS[2]) >= tonumber(room[2]) then
    return cjson.encode({ status = 'room_full' })
  end
elseif not member then
  return cjson.encode({ status = 'not_a_member' })
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return cjson.encode({ status = 'ok', room_id = room[1], members = redis.call('HVALS', KEYS[2]) })
