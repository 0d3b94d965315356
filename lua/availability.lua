-- availability (read only): for each language pair pool, how many live nodes have a free slot —
-- the room-routing policy's view of which target languages can be served now.
--
-- KEYS[1..n] load index zsets P..load:<src>><tgt>
-- ARGV[1] liveness window ms
--
-- Returns JSON [count per key]. Counts nodes with at least one free slot (a lower bound on free
-- slots: summing slots would mean reading every node of the pool). Reads at most 64 entries per
-- pool; a larger count is reported as 64.

local liveness = tonumber(ARGV[1])
local now = now_ms()
local out = {}
for i, key in ipairs(KEYS) do
  local live = 0
  for _, id in ipairs(redis.call('ZRANGE', key, '-inf', '(1', 'BYSCORE', 'LIMIT', 0, 64)) do
    local n = redis.call('HMGET', node_key(id), 'state', 'draining', 'last_hb')
    if n[1] == 'online' and n[2] == '0' and tonumber(n[3]) + liveness > now then
      live = live + 1
    end
  end
  out[i] = live
end
return cjson.encode(out)
