-- session_attach: a client socket opens a new session, or resumes a detached one, on a gateway.
--
-- KEYS[1] session hash       <prefix>:{s:<id>}:session
-- KEYS[2] backlog list       <prefix>:{s:<id>}:backlog   (frames produced while detached)
-- ARGV[1] mode: 'new', 'resume', or 'reattach' (the socket's gateway had been taken for dead and
--         its sessions detached while the socket stayed open: attach them again)
-- ARGV[2] gateway id         ARGV[3] connection id (fences this socket's later detach)
-- ARGV[4] sha256 of the resume token: stored ('new', 'reattach') or presented ('resume')
-- ARGV[5] session settings JSON ('new', 'reattach': written again when Redis lost the record)
--
-- Returns JSON {status="attached", settings, room, backlog=[frame…], previous_gateway} (backlog and
-- previous gateway on resume and reattach), or {status="exists"} ('new' with a taken id) /
-- {status="invalid"} ('resume' of an unknown or expired session or with a wrong token; 'reattach'
-- of a session another socket took meanwhile).

if ARGV[1] == 'new' then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return cjson.encode({ status = 'exists' })
  end
  local now = now_ms()
  redis.call('HSET', KEYS[1], 'gateway', ARGV[2], 'conn', ARGV[3], 'token', ARGV[4],
    'settings', ARGV[5], 'state', 'attached', 'created_ms', now, 'attached_ms', now)
  return cjson.encode({ status = 'attached', settings = ARGV[5], room = '', backlog = {} })
end

local s = redis.call('HMGET', KEYS[1], 'token', 'settings', 'room', 'gateway', 'conn')
local allowed
if ARGV[1] == 'reattach' then
  if not s[5] then
    -- Redis lost the record (restarted empty) while the socket stayed open: write it again.
    local now = now_ms()
    redis.call('HSET', KEYS[1], 'gateway', ARGV[2], 'conn', ARGV[3], 'token', ARGV[4],
      'settings', ARGV[5], 'state', 'attached', 'created_ms', now, 'attached_ms', now)
    return cjson.encode({ status = 'attached', settings = ARGV[5], room = '', backlog = {} })
  end
  allowed = s[5] == ARGV[3]
else
  allowed = s[1] and s[1] == ARGV[4]
end
if not allowed then
  return cjson.encode({ status = 'invalid' })
end
redis.call('HSET', KEYS[1], 'gateway', ARGV[2], 'conn', ARGV[3], 'state', 'attached',
  'attached_ms', now_ms())
redis.call('HDEL', KEYS[1], 'detached_ms')
redis.call('PERSIST', KEYS[1])
local backlog = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
return cjson.encode({ status = 'attached', settings = s[2], room = s[3] or '', backlog = backlog,
  previous_gateway = s[4] })
