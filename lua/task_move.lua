-- task_move: a waiting task leaves this cell for another one that has a free node for it
-- (docs/scaling.md). Marking it here comes first: from now on no gateway dispatches it in this
-- cell (load_task and dispatch_task answer stale), the sweep no longer finds it due, and the jobs
-- of its earlier attempts here are already released (not `assigned`), so complete_task drops a late
-- result from their nodes. The caller then creates the task in the other cell with its attempts
-- and its dispatch wait (dispatch_task ARGV[12]).
--
-- KEYS[1] task               P..task:<task_id>
-- KEYS[2] waiting zset       P..waiting
-- ARGV[1] task id            ARGV[2] expected attempt (attempts made so far)
-- ARGV[3] the other cell's tag
--
-- Returns JSON {status="moved", wait_until} (also when this same move was made before), or
-- {status="stale"} when the task is not waiting at that attempt. The `moved` record keeps no spec
-- nor payload and stays for the task's ttl.

local t = load_task(ARGV[1])
if t and t.state == 'moved' and t.moved_to == ARGV[3] and t.attempt == tonumber(ARGV[2]) then
  return cjson.encode({ status = 'moved', wait_until = t.wait_until })
end
if not t or t.state ~= 'waiting' or t.attempt ~= tonumber(ARGV[2]) then
  return cjson.encode({ status = 'stale' })
end
dequeue(ARGV[1], t, false)
end_task(ARGV[1], t, 'moved', { moved_to = ARGV[3], wait_until = t.wait_until })
redis.call('ZREM', KEYS[2], ARGV[1])
return cjson.encode({ status = 'moved', wait_until = t.wait_until })
