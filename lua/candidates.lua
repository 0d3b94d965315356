-- candidates (read only): the K least-loaded live nodes with a free slot for one language pair,
-- plus the named affinity node when it can take the task. Input of the node-selection policy.
--
-- KEYS[1] pool set           P..pool:<src>><tgt>   (the capability classes serving the pair)
-- ARGV[1] K                  ARGV[2] excluded node ids 'n1,n2' (nodes this task already tried)
-- ARGV[3] affinity node id, or ''
-- ARGV[4] liveness window ms: a node is live while its last heartbeat is younger (the same rule
--         as the liveness zset, read from the node hash this script fetches anyway)
-- ARGV[5] most classes read: a pool served by more classes is read from a random sample of them
--
-- Returns JSON [{id, running, capacity, cpu, gpu, gpu_mem, mem, gpu_queue, ready, labels, pairs,
-- heartbeat_age_ms, affinity}], least loaded first. Reads at most 2K + |excluded| index entries of
-- each class read; the K least loaded of the pool when it has at most ARGV[5] classes.

local k = tonumber(ARGV[1])
local excluded = ARGV[2]
local liveness = tonumber(ARGV[4])
local max_classes = tonumber(ARGV[5])
local now = now_ms()
local out = {}
local seen = {}

local classes
if redis.call('SCARD', KEYS[1]) <= max_classes then
  classes = redis.call('SMEMBERS', KEYS[1])
else
  classes = redis.call('SRANDMEMBER', KEYS[1], max_classes)
end
local serves = {}
for _, cid in ipairs(classes) do serves[cid] = true end

local function add(id, affinity)
  if seen[id] or contains(excluded, id) then return end
  seen[id] = true
  local n = redis.call('HMGET', node_key(id), 'state', 'draining', 'running', 'capacity', 'cpu',
    'gpu', 'gpu_mem', 'mem', 'gpu_queue', 'ready', 'labels', 'pairs', 'last_hb', 'class')
  if n[1] ~= 'online' or n[2] ~= '0' then return end
  if tonumber(n[13]) + liveness <= now then return end
  -- The affinity node is named by the caller: it must serve the pair (a class of this pool).
  if affinity and not (n[14] and redis.call('SISMEMBER', KEYS[1], n[14]) == 1) then return end
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
if ARGV[3] ~= '' then
  add(ARGV[3], true)
  k = k + #out
end

-- The least loaded of every class, merged by load.
local limit = 2 * k + #split(excluded)
local ranked = {}
for _, cid in ipairs(classes) do
  local entries = redis.call('ZRANGE', P .. 'class:' .. cid, '-inf', '(1', 'BYSCORE', 'LIMIT', 0, limit,
    'WITHSCORES')
  for i = 1, #entries, 2 do
    ranked[#ranked + 1] = { id = entries[i], load = tonumber(entries[i + 1]) }
  end
end
if #classes > 1 then
  table.sort(ranked, function(a, b) return a.load < b.load or (a.load == b.load and a.id < b.id) end)
end
for _, entry in ipairs(ranked) do
  if #out >= k then break end
  add(entry.id, false)
end
return cjson.encode(out)
