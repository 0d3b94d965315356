-- task_move: a waiting task leaves this cell for another one that has a free node for it
-- (docs/scaling.md). Marking it here comes first: from now on no gateway dispatches it in this
-- cell (load_task and dispatch_task answer stale), the sweep no longer finds it due, and the jobs
-- of its earlier attempts here are already released (not `assigned`), so complete_task drops a late
-- result from their nodes. The caller then creates the task in the other cell with its attempts
-- and its dispatch wait (dispatch_task ARGV[12]).
--
-- KEYS[1] task hash          P..task:<task_id>
-- KEYS[2] payload string     P..payload:<task_id>
-- KEYS[3] waiting zset       P..waiting
-- ARGV[1] task id            ARGV[2] expected attempt (attempts made so far)
-- ARGV[3] the other cell's tag
--
-- Returns JSON {status="moved", wait_until} or {status="stale"} when the task is not waiting at this
-- attempt (another gateway dispatched or moved it, or it ended). Safe to re-run: a task already
-- moved at this attempt to the same cell answers `moved` again, so the caller goes on to create
-- it there (a second creation there is a duplicate).

local t = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'wait_until', 'ttl_ms', 'moved_to')
if t[1] == 'moved' and t[5] == ARGV[3] and tonumber(t[2]) == tonumber(ARGV[2]) then
  return cjson.encode({ status = 'moved', wait_until = tonumber(t[3]) })
end
if t[1] ~= 'waiting' or tonumber(t[2]) ~= tonumber(ARGV[2]) then
  return cjson.encode({ status = 'stale' })
end
redis.call('HSET', KEYS[1], 'state', 'moved', 'moved_to', ARGV[3])
redis.call('PEXPIRE', KEYS[1], t[4])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[2])
return cjson.encode({ status = 'moved', wait_until = tonumber(t[3]) })
