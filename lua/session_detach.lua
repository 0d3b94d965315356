-- session_detach: a session's socket is gone (dropped, or its gateway died). The session stays
-- resumable for a while: frames for it go to its backlog until it resumes or expires.
--
-- KEYS[1] session hash       KEYS[2] backlog list
-- ARGV[1] fence field: 'conn' (the socket's own gateway) or 'gateway' (taking over a dead gateway)
-- ARGV[2] fence value: the session is detached only while that field still holds it
-- ARGV[3] resume ttl ms: the session (and its backlog) is gone after this long detached
-- ARGV[4] with the 'gateway' fence, when the gateway was found dead (ms): a session attached at or
--         after that moment (the gateway came back and attached it again) is left alone; '' = none
--
-- Returns JSON {status="detached", conn} or {status="already", conn} (detached before, still under
-- the fence: the caller may still schedule its end), or {status="stale"} (resumed elsewhere
-- meanwhile, or gone).

local s = redis.call('HMGET', KEYS[1], ARGV[1], 'state', 'conn', 'attached_ms')
if s[1] ~= ARGV[2] or (ARGV[4] ~= '' and tonumber(s[4] or '0') >= tonumber(ARGV[4])) then
  return cjson.encode({ status = 'stale' })
end
if s[2] == 'detached' then
  return cjson.encode({ status = 'already', conn = s[3] })
end
redis.call('HSET', KEYS[1], 'state', 'detached', 'detached_ms', now_ms())
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return cjson.encode({ status = 'detached', conn = s[3] })
