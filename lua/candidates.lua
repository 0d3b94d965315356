-- candidates (read only): the K least-loaded live nodes with a free slot for one language pair,
-- plus the named affinity node when it can take the task. Input of the node-selection policy.
--
-- KEYS[1] pool set           P..pool:<src>><tgt>   (the capability classes serving the pair)
-- ARGV[1] K                  ARGV[2] excluded node ids 'n1,n2' (nodes this task already tried)
-- ARGV[3] affinity node id, or ''
-- ARGV[4] liveness window ms: a node is live while its last heartbeat is younger
-- ARGV[5] most classes read: a pool served by more classes is read from a random sample of them
-- ARGV[6] the caller's clock (ms): this script only reads, and `dispatch_task` checks liveness
--         again on Redis' clock, so a TIME call per task is saved here
-- ARGV[7] classes whose pairs the caller knows, 'cid1,cid2' (a class id is a hash of its pairs,
--         so they never change): their pairs (up to 1.5 KB for 256) are not sent again
--
-- Returns JSON {status = "ok", nodes = [{id, class, running, capacity, cpu, gpu, gpu_mem, mem, gpu_queue, ready,
-- labels, heartbeat_age_ms, affinity}], classes = {cid = pairs}} (the classes not in ARGV[7]), least
-- loaded first. Per class
-- read: one ZRANGE of at most 2K + |excluded| entries and one HMGET of their cards (and the
-- class's pairs) — three commands for a pool of one class, whatever its nodes and their pairs.

local k = tonumber(ARGV[1])
local excluded = ARGV[2]
local liveness = tonumber(ARGV[4])
local now = tonumber(ARGV[6])
local nodes, classes = {}, {}
local seen = {}
local known = {}
for _, cid in ipairs(split(ARGV[7])) do known[cid] = true end

-- SRANDMEMBER with a count returns the whole set when it is smaller.
local pool = redis.call('SRANDMEMBER', KEYS[1], tonumber(ARGV[5]))

-- A node from its card, or nil when it cannot take a task now.
local function candidate(id, cid, raw, load, affinity)
  if not raw then return nil end
  local c = cjson.decode(raw)
  if not is_live(c.last_hb, liveness, now) then return nil end
  local running = math.floor(load * c.capacity + 0.5)
  if running >= c.capacity then return nil end
  return { id = id, class = cid, running = running, capacity = c.capacity, cpu = c.cpu, gpu = c.gpu,
    gpu_mem = c.gpu_mem, mem = c.mem, gpu_queue = c.gpu_queue, ready = c.ready, labels = c.labels,
    heartbeat_age_ms = now - c.last_hb, affinity = affinity }
end

-- The affinity node comes on top of the K, if it serves the pair and is indexed (online, not
-- draining).
if ARGV[3] ~= '' and not contains(excluded, ARGV[3]) then
  local id = ARGV[3]
  local cid = redis.call('HGET', node_key(id), 'class')
  local load = cid and redis.call('ZSCORE', P .. 'class:' .. cid, id)
  if load and redis.call('SISMEMBER', KEYS[1], cid) == 1 then
    local info = redis.call('HMGET', P .. 'class:' .. cid .. ':info', 'n:' .. id, 'pairs')
    local c = candidate(id, cid, info[1], tonumber(load), true)
    if c then
      nodes[1] = c
      if not known[cid] then classes[cid] = info[2] end
      seen[id] = true
      k = k + 1
    end
  end
end

-- The least loaded of every class, merged by load.
local limit = 2 * k + #split(excluded)
local ranked = {}
for _, cid in ipairs(pool) do
  local entries = redis.call('ZRANGE', P .. 'class:' .. cid, '-inf', '(1', 'BYSCORE', 'LIMIT', 0, limit,
    'WITHSCORES')
  for i = 1, #entries, 2 do
    if not seen[entries[i]] and not contains(excluded, entries[i]) then
      ranked[#ranked + 1] = { id = entries[i], class = cid, load = tonumber(entries[i + 1]) }
    end
  end
end
if #pool > 1 then
  table.sort(ranked, function(a, b) return a.load < b.load or (a.load == b.load and a.id < b.id) end)
end

-- Cards are read in rounds: the next K - |nodes| ranked entries, one HMGET per class among them;
-- a dead node (no heartbeat within the window) is skipped and the next round fills its place.
local next_entry = 1
while #nodes < k and next_entry <= #ranked do
  local round, by_class = {}, {}
  while #round < k - #nodes and next_entry <= #ranked do
    local e = ranked[next_entry]
    round[#round + 1] = e
    by_class[e.class] = by_class[e.class] or {}
    table.insert(by_class[e.class], e)
    next_entry = next_entry + 1
  end
  local cards = {}
  for cid, entries in pairs(by_class) do
    local fields = {}
    for _, e in ipairs(entries) do fields[#fields + 1] = 'n:' .. e.id end
    if not known[cid] and classes[cid] == nil then fields[#fields + 1] = 'pairs' end
    local values = redis.call('HMGET', P .. 'class:' .. cid .. ':info', unpack(fields))
    for i, e in ipairs(entries) do cards[e.id] = values[i] end
    if #values > #entries then classes[cid] = values[#values] end
  end
  for _, e in ipairs(round) do
    local c = candidate(e.id, e.class, cards[e.id], e.load, false)
    if c then nodes[#nodes + 1] = c end
  end
end
for cid, class_pairs in pairs(classes) do
  if not class_pairs then classes[cid] = nil end
end
return cjson.encode({ status = 'ok', nodes = nodes, classes = classes })
