-- room_create: a session opens a room under a fresh 6-digit code and is its first member.
--
-- KEYS[1] room hash          <prefix>:{r:<code>}:room     (room_id, created_ms, max_members)
-- KEYS[2] members hash       <prefix>:{r:<code>}:members  (session id → member JSON)
-- ARGV[1] room id            ARGV[2] session id           ARGV[3] member JSON
-- ARGV[4] max members        ARGV[5] idle ttl ms
--
-- Returns JSON {status="created"}, or {status="CODE_TAKEN"} (the caller draws another code).

if redis.call('EXISTS', KEYS[1]) == 1 then
  return cjson.encode({ status = 'code_taken' })
end
redis.call('HSET', KEYS[1], 'room_id', ARGV[1], 'created_ms', now_ms(), 'max_members', ARGV[4])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return cjson.encode({ status = 'created' })
