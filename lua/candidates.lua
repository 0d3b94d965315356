-- candidates (read only): the K least-loaded live nodes with a free slot for one language pair,
-- plus the named affinity node when it can take the task. Input of the node-selection policy.
--
-- KEYS[1] load index zset    P..load:<src>><tgt>   (score = running / capacity)
-- ARGV[1] K                  ARGV[2] excluded node ids 'n1,n2' (nodes this task already tried)
-- ARGV[3] affinity node id, or ''
-- ARGV[4] liveness window ms: a node is live while its last heartbeat is younger (the same rule
--         as the liveness zset, read from the node hash this script fetches anyway)
--
-- Returns JSON [{id, running, capacity, cpu, gpu, gpu_mem, mem, gpu_queue, ready, labels, pairs,
-- heartbeat_age_ms, affinity}], least loaded first. Reads at most 2K + |excluded| index entries.

local k = tonumber(ARGV[1])
local excluded = ARGV[2]
local liveness = tonumber(ARGV[4])
local now = now_ms()
local out = {}
local seen = {}

local function add(id, affinity)
  if seen[id] or contains(excluded, id) then return end
  seen[id] = true
  local n = redis.call('HMGET', node_key(id), 'state', 'draining', 'running', 'capacity', 'cpu',
    'gpu', 'gpu_mem', 'mem', 'gpu_queue', 'ready', 'labels', 'pairs', 'last_hb')
  if n[1] ~= 'online' or n[2] ~= '0' then return end
  if tonumber(n[13]) + liveness <= now then return end
  local running, capacity = tonumber(n[3]), tonumber(n[4])
  if running >= capacity then return end
  out[#out + 1] = {
    id = id, running = running, capacity = capacity,
    cpu = tonumber(n[5]), gpu = tonumber(n[6]), gpu_mem = tonumber(n[7]), mem = tonumber(n[8]),
    gpu_queue = tonumber(n[9]), ready = n[10], labels = n[11], pairs = n[12],
    heartbeat_age_ms = now - tonumber(n[13]), affinity = affinity,
  }
end

-- The affinity node comes on top of the K.
if ARGV[3] ~= '' and redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  add(ARGV[3], true)
  k = k + #out
end
local ids = redis.call('ZRANGE', KEYS[1], '-inf', '(1', 'BYSCORE', 'LIMIT', 0,
  2 * k + #split(excluded))
for _, id in ipairs(ids) do
  if #out >= k then break end
  add(id, false)
end
return cjson.encode(out)
