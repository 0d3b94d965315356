-- sweep: the periodic timeout pass. Any gateway may call it; one call runs per interval per cell.
-- Takes expired nodes offline, ends jobs past their deadline, and lists waiting tasks that are due.
--
-- KEYS[1] sweep lock         P..sweep_lock
-- KEYS[2] liveness zset      P..alive
-- KEYS[3] deadlines zset     P..deadlines
-- KEYS[4] waiting zset       P..waiting
-- ARGV[1] gateway id         ARGV[2] lock ms (the sweep interval)
-- ARGV[3] limit per kind     ARGV[4] node retention ms   ARGV[5] retry ms
--
-- Returns JSON {status="busy"} when another gateway swept within the interval, else
-- {status="swept", offline=[node ids], released={requeued, failed, cancel}, due=[task ids]}.
-- Bounded: at most `limit` nodes (each with at most its capacity in jobs), `limit` jobs and `limit`
-- waiting tasks per call. Due tasks are pushed back by retry ms so the next sweep does not return
-- them again while a gateway dispatches them.

if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return cjson.encode({ status = 'busy' })
end
local now = now_ms()
local limit = tonumber(ARGV[3])
local out = released()

-- Due tasks first: tasks the releases below put back to waiting are in `requeued` already.
local due = redis.call('ZRANGE', KEYS[4], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
for _, tid in ipairs(due) do
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[5]), tid)
end


local offline = redis.call('ZRANGE', KEYS[2], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
for _, id in ipairs(offline) do
  take_offline(id, tonumber(ARGV[4]), now, out)
end

for _, jid in ipairs(redis.call('ZRANGE', KEYS[3], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)) do
  release_job(jid, 'timed_out', 'JOB_TIMEOUT', now, out)
end

return cjson.encode({ status = 'swept', offline = offline, released = out, due = due })
