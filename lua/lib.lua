-- lib.lua: helpers prepended to every script by the loader (src/scheduler/scripts.rs).
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

-- The load index is per capability class, not per language pair, so that a slot taken or freed
-- costs one write however many pairs a node serves (docs/redis.md, "Load index"):
--   P..class:<cid>        zset of the class's online, non-draining nodes, score running / capacity
--                         (ZRANGE BYSCORE -inf (1 yields the least loaded with a free slot first)
--   P..class:<cid>:info   hash {pairs, nodes}: the class's pairs and how many online nodes it has
--   P..pool:<src>><tgt>   set of the classes that serve the pair
-- A class is the exact set of pairs a node serves; nodes of one shape share it. Only a class that
-- appears in or leaves the cell costs O(pairs) (pool sets), at registration, a capability change
-- or a node's loss.

local function class_of(pairs) return string.sub(redis.sha1hex(pairs or ''), 1, 12) end
local function class_key(cid) return P .. 'class:' .. cid end

-- An online node joins its class (registration, or a capability change).
local function join_class(cid, pairs)
  local info = class_key(cid) .. ':info'
  if redis.call('HINCRBY', info, 'nodes', 1) == 1 then
    redis.call('HSET', info, 'pairs', pairs)
    for _, pair in ipairs(split(pairs)) do redis.call('SADD', P .. 'pool:' .. pair, cid) end
  end
end

-- A node leaves its class (it went offline, or its capabilities changed).
local function leave_class(id, cid)
  redis.call('ZREM', class_key(cid), id)
  local info = class_key(cid) .. ':info'
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

local function node_key(id) return P .. 'node:' .. id end

-- Re-indexes a node after its running count or state changed.
local function reindex_node(id)
  local n = redis.call('HMGET', node_key(id), 'state', 'draining', 'class', 'running', 'capacity')
  if not n[1] or not n[3] then return end
  local online = n[1] == 'online' and n[2] == '0'
  reindex(id, n[3], online, tonumber(n[4]) or 0, tonumber(n[5]) or 1)
end

-- Ends the job `jid` early (its node went away, or its deadline passed): frees the node's slot,
-- marks the job `reason`, and sends the task back to `waiting` for a new attempt, or fails it when
-- its attempts are used up. Appends what the caller must do to `out` (see `released()`).
local function release_job(jid, reason, fail_code, now, out)
  local jkey = P .. 'job:' .. jid
  local j = redis.call('HMGET', jkey, 'task', 'node', 'state')
  redis.call('ZREM', P .. 'deadlines', jid)
  if not j[1] or j[3] ~= 'assigned' then return end
  local tid, node = j[1], j[2]
  redis.call('HSET', jkey, 'state', reason)
  redis.call('SREM', node_key(node) .. ':jobs', jid)
  local running = tonumber(redis.call('HGET', node_key(node), 'running') or '0')
  if running > 0 then redis.call('HINCRBY', node_key(node), 'running', -1) end
  reindex_node(node)
  if reason == 'timed_out' then
    out.cancel[#out.cancel + 1] = { job_id = jid, node_id = node }
  end

  local tkey = P .. 'task:' .. tid
  local t = redis.call('HMGET', tkey, 'state', 'job', 'attempt', 'max_attempts', 'spec', 'ttl_ms')
  if t[1] ~= 'assigned' or t[2] ~= jid then return end
  if tonumber(t[3]) >= tonumber(t[4]) then
    redis.call('HSET', tkey, 'state', 'failed', 'code', fail_code)
    redis.call('DEL', P .. 'payload:' .. tid)
    out.failed[#out.failed + 1] = { task_id = tid, code = fail_code, spec = t[5], job_id = jid }
  else
    redis.call('HSET', tkey, 'state', 'waiting')
    redis.call('ZADD', P .. 'waiting', now, tid)
    out.requeued[#out.requeued + 1] = tid
  end
  redis.call('PEXPIRE', tkey, t[6])
end

local function released()
  return { requeued = {}, failed = {}, cancel = {} }
end

-- Takes an online node offline: releases every in-flight job (bounded by its capacity), removes it
-- from liveness and its class, and keeps the record (id, secret) for `retention_ms`.
local function take_offline(id, retention_ms, now, out)
  local key = node_key(id)
  for _, jid in ipairs(redis.call('SMEMBERS', key .. ':jobs')) do
    release_job(jid, 'lost', 'NODE_UNAVAILABLE', now, out)
  end
  redis.call('DEL', key .. ':jobs')
  redis.call('HSET', key, 'state', 'offline', 'running', 0, 'conn', '')
  local cid = redis.call('HGET', key, 'class')
  if cid then leave_class(id, cid) end
  redis.call('ZREM', P .. 'alive', id)
  redis.call('SREM', P .. 'nodes', id)
  redis.call('PEXPIRE', key, retention_ms)
end
