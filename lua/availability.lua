-- availability (read only): for each language pair pool, how many live nodes have a free slot —
-- the room-routing policy's view of which target languages can be served now.
--
-- KEYS[1..n] pool sets       P..pool:<src>><tgt>   (the capability classes serving the pair)
-- ARGV[1] liveness window ms
--
-- Returns JSON {status="ok", free=[count per key]}. Counts nodes with at least one free slot (a lower bound on free
-- slots: summing slots would mean reading every node of the pool). Reads at most 64 index entries
-- per pool, from at most 16 of its classes; a larger count is reported as 64.

local liveness = tonumber(ARGV[1])
local now = now_ms()
local out = {}
for i, key in ipairs(KEYS) do
  local live = 0
  for _, cid in ipairs(redis.call('SRANDMEMBER', key, 16)) do
    if live >= 64 then break end
    local ids = redis.call('ZRANGE', P .. 'class:' .. cid, '-inf', '(1', 'BYSCORE', 'LIMIT', 0, 64 - live)
    if #ids > 0 then
      local fields = {}
      for j, id in ipairs(ids) do fields[j] = 'n:' .. id end
      for _, raw in ipairs(redis.call('HMGET', P .. 'class:' .. cid .. ':info', unpack(fields))) do
        if raw and is_live(cjson.decode(raw).last_hb, liveness, now) then live = live + 1 end
      end
    end
  end
  out[i] = live
end
return cjson.encode({ status = 'ok', free = out })
