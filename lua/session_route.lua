-- session_route: where a frame for a session goes. An attached session names its gateway (the
-- caller appends the frame to that gateway's inbox); a detached one keeps the frame in its backlog,
-- bounded, until it resumes.
--
-- KEYS[1] session hash       KEYS[2] backlog list
-- ARGV[1] frame JSON (kept when the session is detached)
-- ARGV[2] '1' when the frame has to be kept whatever the state (the gateway holding the session
--         has no socket for it any more), '0' otherwise; '' when the frame is not worth keeping
--         (delivery hints like expectations: dropped unless the session is attached)
-- ARGV[3] backlog bound      ARGV[4] backlog ttl ms
--
-- Returns JSON {status="attached", gateway}, {status="kept"} (in the backlog), or {status="gone"}
-- (no such session, or a hint for a detached one: dropped).

local s = redis.call('HMGET', KEYS[1], 'state', 'gateway')
if not s[1] then return cjson.encode({ status = 'gone' }) end
if s[1] == 'attached' and ARGV[2] ~= '1' then return cjson.encode({ status = 'attached', gateway = s[2] }) end
if ARGV[2] == '' then return cjson.encode({ status = 'gone' }) end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return cjson.encode({ status = 'kept' })
