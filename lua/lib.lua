-- lib.lua: helpers prepended to every script by the loader (src/store/scripts.rs).
--
-- Replies are JSON (cjson). cjson encodes an empty list as {}; the Rust side reads that as [].
--
-- Key names: P is the key prefix up to and including the cell's hash tag, taken from KEYS[1]
-- ("sb:{c0-4jx}:node:n1" -> "sb:{c0-4jx}:"). Keys a script finds through data (a node's in-flight
-- jobs, the top-K nodes of an index, the task of a job) are built from P, so they always share the
-- tag, and so the slot, of the declared keys. See docs/redis.md, "Declared and derived keys".

local P = string.match(KEYS[1], '^(.-}:)')

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function split(csv)
  local out = {}
  if csv == nil or csv == '' then return out end
  for item in string.gmatch(csv, '[^,]+') do out[#out + 1] = item end
  return out
end

local function contains(csv, item)
  for _, v in ipairs(split(csv)) do
    if v == item then return true end
  end
  return false
end

local function node_key(id) return P .. 'node:' .. id end
local function task_key(tid) return P .. 'task:' .. tid end

-- A job id names its cell and its task: job-<cell tag>-<hex>:<task id> (src/store/mod.rs), so
-- no job record is kept: the task holds its current job. An ended task keeps only the <hex> part.
local function task_of(jid) return string.match(jid, '^[^:]*:(.+)$') end
local function job_hex(jid) return string.match(jid, '^[^:]*%-([^:%-]+):') end

-- Whether task `t` holds (or, ended, held) job `jid` as its last attempt.
local function holds(t, jid) return t.job == jid or (t.job ~= nil and t.job == job_hex(jid)) end

-- The job fence: whether task `t` is assigned and job `jid` is its current job, on `node`, at
-- `attempt` (a string; '' when the node did not say). Every call a node makes about a job passes
-- it, so a late or duplicate call of a superseded attempt changes nothing.
local function runs_job(t, jid, node, attempt)
  return t ~= nil and t.state == 'assigned' and t.job == jid and t.node == node
    and (attempt == '' or tonumber(attempt) == t.attempt)
end

-- The liveness rule: a node is live while its last heartbeat is younger than the window.
local function is_live(last_hb, window, now) return tonumber(last_hb) + tonumber(window) > now end

-- A task is one string: "<state JSON>\n<spec JSON>\n<payload JSON>". The state part is decoded
-- here; spec and payload pass through as the gateway wrote them (never decoded in Lua). One GET
-- reads it and one SET (with its ttl) writes it, so a task costs two commands per transition.
-- State fields: state call attempt max_attempts tried wait_until created_ms ttl_ms job node
-- assigned_ms acked_ms started_ms done_ms code moved_to.
local function load_task(tid)
  local raw = redis.call('GET', task_key(tid))
  if not raw then return nil end
  local i = string.find(raw, '\n', 1, true)
  local j = string.find(raw, '\n', i + 1, true)
  local t = cjson.decode(string.sub(raw, 1, i - 1))
  t.spec = string.sub(raw, i + 1, j - 1)
  t.payload = string.sub(raw, j + 1)
  return t
end

-- Writes task `t` for `ttl` ms (its own ttl_ms when nil); `nx`: only if no task has this id
-- (returns false then).
local function store_task(tid, t, nx, ttl)
  local spec, payload = t.spec, t.payload
  t.spec, t.payload = nil, nil
  local raw = cjson.encode(t) .. '\n' .. (spec or '') .. '\n' .. (payload or '')
  t.spec, t.payload = spec, payload
  if nx then return redis.call('SET', task_key(tid), raw, 'PX', ttl or t.ttl_ms, 'NX') end
  return redis.call('SET', task_key(tid), raw, 'PX', ttl or t.ttl_ms)
end

-- An ended task keeps only what duplicate detection (its state), fencing (state, node, attempt,
-- the <hex> of its last job) and a replayed call (call) need — not its spec, its audio nor its
-- timestamps: ~110 bytes for the task ttl (docs/redis.md, "Memory per task").
local function end_task(tid, t, state, extra)
  local kept = { state = state, attempt = t.attempt, job = t.job and (job_hex(t.job) or t.job), node = t.node,
    call = t.call }
  for k, v in pairs(extra or {}) do kept[k] = v end
  store_task(tid, kept, false, t.ttl_ms)
end

-- The load index is per capability class, not per language pair, so that a slot taken or freed
-- costs one write however many pairs a node serves (docs/redis.md, "Load index"):
--   P..class:<cid>        zset of the class's online, non-draining nodes, score running / capacity
--                         (ZRANGE BYSCORE -inf (1 yields the least loaded with a free slot first)
--   P..class:<cid>:info   hash: `pairs` (the class's pairs), `nodes` (how many online nodes it has)
--                         and `n:<id>`, the card of each of them (JSON: capacity, usage, ready,
--                         labels, last_hb), which `candidates` reads for K nodes in one HMGET
--   P..pool:<src>><tgt>   set of the classes that serve the pair
-- A class is the exact set of pairs a node serves; nodes of one shape share it. Only a class that
-- appears in or leaves the cell costs O(pairs) (pool sets), at registration, a capability change
-- or a node's loss.

local function class_of(pairs) return string.sub(redis.sha1hex(pairs or ''), 1, 12) end
local function class_key(cid) return P .. 'class:' .. cid end
local function info_key(cid) return P .. 'class:' .. cid .. ':info' end

-- A node's card: what the node-selection policy sees of it, besides its load.
local function card(capacity, usage, ready, labels, last_hb)
  return cjson.encode({ capacity = tonumber(capacity), cpu = tonumber(usage[1]), gpu = tonumber(usage[2]),
    gpu_mem = tonumber(usage[3]), mem = tonumber(usage[4]), gpu_queue = tonumber(usage[5]),
    ready = ready, labels = labels, last_hb = tonumber(last_hb) })
end

-- An online node joins its class (registration, or a capability change).
local function join_class(id, cid, pairs, node_card)
  local info = info_key(cid)
  redis.call('HSET', info, 'n:' .. id, node_card)
  if redis.call('HINCRBY', info, 'nodes', 1) == 1 then
    redis.call('HSET', info, 'pairs', pairs)
    for _, pair in ipairs(split(pairs)) do redis.call('SADD', P .. 'pool:' .. pair, cid) end
  end
end

-- A node leaves its class (it went offline, or its capabilities changed).
local function leave_class(id, cid)
  redis.call('ZREM', class_key(cid), id)
  local info = info_key(cid)
  redis.call('HDEL', info, 'n:' .. id)
  if redis.call('HINCRBY', info, 'nodes', -1) <= 0 then
    for _, pair in ipairs(split(redis.call('HGET', info, 'pairs'))) do
      redis.call('SREM', P .. 'pool:' .. pair, cid)
    end
    redis.call('DEL', info)
  end
end

-- A node's place in its class index after its running count or state changed: O(1).
local function reindex(id, cid, online, running, capacity)
  if online then
    redis.call('ZADD', class_key(cid), running / math.max(capacity, 1), id)
  else
    redis.call('ZREM', class_key(cid), id)
  end
end

-- A node's jobs in flight: a JSON list in its hash (field `jobs`; `running` is its length), read
-- with the fields a transition reads anyway and written with the same HSET.
local function jobs_of(raw)
  if not raw or raw == '' or raw == '{}' then return {} end
  return cjson.decode(raw)
end

local function jobs_json(jobs)
  if #jobs == 0 then return '[]' end
  return cjson.encode(jobs)
end

-- The fair queue (docs/overload.md): waiting tasks in the order a freed slot goes to them.
--   P..queue:<pool>  zset of the pool's waiting tasks, score = band × 1e12 + virtual finish time
--             (per pool: a freed slot goes to the head of the queue of the pool it served)
--   P..held:<tenant> zset of the tenant's waiting tasks held by its cap on running tasks (same
--             score): out of their pools' queues, so they block no one, until one of the
--             tenant's tasks ends (`count_running`)
--   P..fair   hash: `v` the virtual clock (the finish time of the last task dispatched from the
--             queue), `f:<tenant>` the finish time last given to the tenant, `n:<tenant>` how many
--             of its tasks wait (queued or held), `p:<pool>` how many of the pool's, `r:<tenant>`
--             how many run (tasks with a tenant)
-- A task entering the queue starts at max(v, its tenant's last finish) and finishes 1/weight
-- later: tenants that keep tasks waiting share freed slots in proportion to their weights, and a
-- tenant that was idle starts at the clock, not with credit. A lower band always goes first. The
-- task holds its tenant, weight, band, cap and bound (set when it was created) and, while it
-- waits, its finish time (`fair`) and whether it is held (`held`).
-- The finish time task `t` would enter the queue with, or nil when its tenant already has
-- `t.bound` tasks waiting (`bounded` false: no bound, for a task a node lost). Reads only.
local function queue_score(t, bounded)
  local tenant = t.tenant or ''
  -- Without the fair queue (`t.fifo`) every tenant is one flow: the queue is in arrival order.
  local flow = t.fifo and '' or tenant
  local f = redis.call('HMGET', P .. 'fair', 'v', 'f:' .. flow, 'n:' .. tenant)
  if bounded and t.bound and (tonumber(f[3]) or 0) >= t.bound then return nil end
  return math.max(tonumber(f[1]) or 0, tonumber(f[2]) or 0) + 1 / (t.weight or 1)
end

local function pool_queue(pool) return P .. 'queue:' .. pool end
local function held_set(tenant) return P .. 'held:' .. tenant end

-- Where waiting task `t` is: its tenant's held set, or its pool's queue.
local function queue_key(t)
  if t.held then return held_set(t.tenant or '') end
  return pool_queue(t.pool)
end

-- Puts task `t` in its pool's queue (its tenant's held set when `t.held`) at the finish time
-- `queue_score` gave it (`t.fair`), in its band.
local function enqueue(tid, t)
  local tenant = t.tenant or ''
  redis.call('HINCRBY', P .. 'fair', 'n:' .. tenant, 1)
  redis.call('HINCRBY', P .. 'fair', 'p:' .. t.pool, 1)
  redis.call('HSET', P .. 'fair', 'f:' .. (t.fifo and '' or tenant), t.fair)
  redis.call('ZADD', queue_key(t), (t.band or 1) * 1e12 + t.fair, tid)
end

-- Moves queued task `t` between its pool's queue and its tenant's held set (`held`); the caller
-- stores the task.
local function set_held(tid, t, held)
  if (t.held or false) == held then return end
  redis.call('ZREM', queue_key(t), tid)
  t.held = held or nil
  redis.call('ZADD', queue_key(t), (t.band or 1) * 1e12 + t.fair, tid)
end

-- Takes task `t` out of the fair queue (it was dispatched, failed or moved); a dispatched task's
-- finish time advances the virtual clock.
local function dequeue(tid, t, dispatched)
  if not t.fair then return end
  redis.call('ZREM', queue_key(t), tid)
  redis.call('HINCRBY', P .. 'fair', 'n:' .. (t.tenant or ''), -1)
  redis.call('HINCRBY', P .. 'fair', 'p:' .. t.pool, -1)
  if dispatched then
    if t.fair > (tonumber(redis.call('HGET', P .. 'fair', 'v')) or 0) then
      redis.call('HSET', P .. 'fair', 'v', t.fair)
    end
  end
  t.fair, t.held = nil, nil
end

-- Whether task `t` may not run now: its tenant already runs as many tasks as its cap.
local function at_cap(t)
  if not t.cap then return false end
  return (tonumber(redis.call('HGET', P .. 'fair', 'r:' .. (t.tenant or ''))) or 0) >= t.cap
end

-- Counts task `t` running (`delta` 1) or no longer running (-1) for its tenant. When a task that
-- carries a cap stops, its tenant's first held task goes back to its pool's queue: returns its id
-- (the caller dispatches it), or nil.
local function count_running(t, delta)
  local tenant = t.tenant or ''
  if tenant == '' then return nil end
  redis.call('HINCRBY', P .. 'fair', 'r:' .. tenant, delta)
  if delta > 0 or not t.cap then return nil end
  local first = redis.call('ZRANGE', held_set(tenant), 0, 0)[1]
  if not first then return nil end
  local h = load_task(first)
  if not h or h.state ~= 'waiting' then
    redis.call('ZREM', held_set(tenant), first)
    return nil
  end
  set_held(first, h, false)
  store_task(first, h)
  return first
end

-- The waiting task of `pool` that a free slot of `node` goes to: the head of the pool's queue if
-- it scores below `before` (a number, or a function giving it, called only when the queue has a
-- head: it may cost a read; math.huge: any head) and is not `except`. A head whose tenant is at
-- its cap is held on the way and the next one looked at (up to 8); a head that lost a job on
-- `node` before does not take it (nil: the caller's task may). Returns the id and the task, or nil.
local function fair_head(pool, node, before, except)
  local queue = pool_queue(pool)
  for _ = 1, 8 do
    local top = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
    if not top[1] or top[1] == except then return nil end
    if type(before) == 'function' then before = before() end
    if tonumber(top[2]) >= before then return nil end
    local h = load_task(top[1])
    if not h or h.state ~= 'waiting' then
      redis.call('ZREM', queue, top[1])
    elseif not at_cap(h) then
      if contains(h.tried, node) then return nil end
      return top[1], h
    else
      set_held(top[1], h, true)
      store_task(top[1], h)
    end
  end
  return nil
end

-- Assigns waiting task `t` (id `tid`) to `node` as job `jid` at `now`: out of the fair queue, its
-- attempt counted. The caller stores the task and takes the slot (`occupy`).
local function assign(tid, t, node, jid, now)
  t.state = 'assigned'
  t.attempt = t.attempt + 1
  t.job = jid
  t.node = node
  t.tried = t.tried == '' and node or (t.tried .. ',' .. node)
  t.assigned_ms = now
  t.lost = nil
  dequeue(tid, t, true)
end

-- Takes a slot of `node` (whose class is `cid`, capacity `cap`, jobs in flight `jobs`, a list this
-- appends to) for job `jid` of task `t`, due in `timeout_ms`.
local function occupy(node, cid, cap, jobs, t, jid, now, timeout_ms)
  count_running(t, 1)
  jobs[#jobs + 1] = jid
  redis.call('HSET', node_key(node), 'running', #jobs, 'jobs', jobs_json(jobs))
  reindex(node, cid, true, #jobs, cap)
  redis.call('ZADD', P .. 'deadlines', now + timeout_ms, jid)
end

-- Hands a free slot of `node` to waiting task `h` (id `hid`) as job `jid`: the reply's `handoff`,
-- which the caller sends to the node.
local function hand_off(hid, h, node, cid, cap, jobs, jid, now, timeout_ms)
  local spec, payload = h.spec, h.payload
  assign(hid, h, node, jid, now)
  store_task(hid, h)
  occupy(node, cid, cap, jobs, h, jid, now, timeout_ms)
  redis.call('ZREM', P .. 'waiting', hid)
  return { task_id = hid, node_id = node, attempt = h.attempt, job_id = jid, spec = spec, payload = payload }
end

-- Frees job `jid`'s slot on its node (the job ended, or was taken away): one read, one write and
-- the node's place in its index. Returns whether the node was full, and the freed slot when the
-- node takes tasks ({cid, cap, jobs}).
local function free_slot(node, jid)
  local n = redis.call('HMGET', node_key(node), 'state', 'draining', 'class', 'capacity', 'jobs')
  if not n[1] then return false end
  local jobs, kept = jobs_of(n[5]), {}
  for _, j in ipairs(jobs) do if j ~= jid then kept[#kept + 1] = j end end
  if #kept == #jobs then return false end
  redis.call('HSET', node_key(node), 'running', #kept, 'jobs', jobs_json(kept))
  local open = n[1] == 'online' and n[2] == '0'
  if n[3] then reindex(node, n[3], open, #kept, tonumber(n[4]) or 1) end
  -- What a handoff of the freed slot needs (complete_task): the node takes tasks, its class.
  local slot = open and n[3] and { cid = n[3], cap = tonumber(n[4]) or 1, jobs = kept } or nil
  return #jobs >= (tonumber(n[4]) or 1), slot
end

-- Ends the job `jid` early (its node went away, or its deadline passed): frees the node's slot
-- and sends the task back to `waiting` for a new attempt, or fails it when its attempts are used
-- up. Appends what the caller must do to `out` (see `released()`).
local function release_job(jid, reason, fail_code, now, out)
  local tid = task_of(jid)
  if not tid then return end
  redis.call('ZREM', P .. 'deadlines', jid)
  local t = load_task(tid)
  if not t or t.state ~= 'assigned' or t.job ~= jid then return end
  free_slot(t.node, jid)
  local unheld = count_running(t, -1)
  if unheld then out.requeued[#out.requeued + 1] = unheld end
  if reason == 'timed_out' then
    out.cancel[#out.cancel + 1] = { job_id = jid, node_id = t.node }
  end
  if t.attempt >= t.max_attempts then
    out.failed[#out.failed + 1] = { task_id = tid, code = fail_code, spec = t.spec, job_id = jid }
    end_task(tid, t, 'failed', { code = fail_code, lost = reason })
  else
    t.state = 'waiting'
    t.lost = reason
    -- Back in the queue, behind what waits: a bound reached now does not fail a task a node lost.
    t.fair = queue_score(t, false)
    enqueue(tid, t)
    store_task(tid, t)
    redis.call('ZADD', P .. 'waiting', now, tid)
    out.requeued[#out.requeued + 1] = tid
  end
end

local function released()
  return { requeued = {}, failed = {}, cancel = {} }
end

-- Takes an online node offline: releases every in-flight job (bounded by its capacity), removes it
-- from liveness and its class, and keeps the record (id, secret) for `retention_ms`.
local function take_offline(id, retention_ms, now, out)
  local key = node_key(id)
  for _, jid in ipairs(jobs_of(redis.call('HGET', key, 'jobs'))) do
    release_job(jid, 'lost', 'NODE_UNAVAILABLE', now, out)
  end
  redis.call('HSET', key, 'state', 'offline', 'running', 0, 'jobs', '[]', 'conn', '')
  local cid = redis.call('HGET', key, 'class')
  if cid then leave_class(id, cid) end
  redis.call('ZREM', P .. 'alive', id)
  redis.call('SREM', P .. 'nodes', id)
  redis.call('PEXPIRE', key, retention_ms)
end
