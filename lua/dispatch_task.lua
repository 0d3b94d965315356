-- dispatch_task: creates a task on its first call and assigns it to one node as a new job attempt,
-- or leaves it waiting for a free slot.
--
-- KEYS[1] task               P..task:<task_id>  (one string: lib.lua, load_task)
-- KEYS[2] waiting zset       P..waiting        (task → time of its next dispatch try)
-- KEYS[3] deadlines zset     P..deadlines      (job → deadline)
-- KEYS[4] node hash          P..node:<node_id>  (P..node: when ARGV[3] is '')
-- ARGV[1] task id            ARGV[2] expected attempt (attempts made so far; 0 for a new task)
-- ARGV[3] node id, or '' when there is no candidate   ARGV[4] new job id (job-<tag>-<hex>:<task id>)
-- ARGV[5] job timeout ms     ARGV[6] task spec JSON on the first call, '' afterwards
-- ARGV[7] payload (first call)   ARGV[8] ttl ms of the task
-- ARGV[9] max attempts (first call)   ARGV[10] dispatch wait ms (first call)
-- ARGV[11] retry ms: when the task waits, how soon a sweep tries it again
-- ARGV[12] '' for a new task; for a task moving in from another cell (task_move.lua), the end of
--          its dispatch wait (ms): it keeps its attempts (ARGV[2]) and its wait
-- ARGV[13] the class the node was a candidate in: the pool held that class, and still does while
--          the node is online in it (a class leaves a pool only with its last online node)
--          ('' when the caller has no candidate, e.g. a test: the pool ARGV[15] is asked instead)
-- ARGV[14] liveness window ms: the node is live while its last heartbeat is younger
-- ARGV[15] the pool (`src>tgt`)
-- ARGV[16] tenant ('' for none)   ARGV[17] its weight   ARGV[18] its band (0 goes first)
-- ARGV[19] the most tasks of the tenant that may wait in this cell (first call; lib.lua, enqueue)
-- ARGV[20] '1': the fair queue (below); '0': off — one flow in arrival order (the task keeps
--          `fifo`), and a free slot goes to whichever task asks
-- ARGV[21] the most tasks of the tenant that may run in this cell at once ('' for no cap; first
--          call; lib.lua, at_cap)
--
-- Returns JSON {status=…}:
--   assigned  {attempt, job_id}          the node's slot is taken; send job_assign
--   refused   {reason}                   the node cannot take it (offline, expired, draining, full,
--                                        wrong_pair, already_tried); the task waits, try another
--   waiting                              no node given; the task waits for a slot
--   queued    {handoff}                  the node has a slot, but a task of the pool that the fair
--                                        queue puts first waits (lib.lua, enqueue): this task waits
--                                        and the slot is the head's — `handoff` {task_id, node_id,
--                                        attempt, job_id, spec, payload} is assigned to the node;
--                                        send it
--   held      {handoff}                  the task's tenant runs as many tasks as its cap: it waits,
--                                        held (lib.lua, at_cap); `handoff` as above, or null
--   failed    {code, spec, handoff?}     no node given and the dispatch wait is over
--                                        (NO_AVAILABLE_NODE); or the task would wait and its
--                                        tenant already has the most tasks waiting, or its cap held
--                                        it for its whole dispatch wait (NODE_OVERLOADED); a
--                                        `handoff` as above when the slot went to the queue's head
--   duplicate {state}                    a task with this id exists, in `state` (first call only;
--                                        a record left by an earlier move out of this cell does
--                                        not count)
--   stale                                the task is not waiting at this attempt (someone else
--                                        dispatched it, or it ended)
--
-- Safe to re-run: the same call sent again after its reply was lost (same new job id, ARGV[4])
-- answers what it did the first time — `assigned` with that job, or `waiting` for the task it
-- created — instead of `duplicate`/`stale`, so the gateway still sends the job or announces the task.
-- (A handoff whose reply was lost is not sent again: the head's job deadline dispatches it anew.)
--
-- Commands on the common path (a new task assigned at once): TIME, HMGET node, ZRANGE queue (with
-- the fair queue), SET task NX, HSET node, ZADD class, ZADD deadlines; HINCRBY running for a task with a
-- tenant, HGET running for one with a cap.

local tid, node = ARGV[1], ARGV[3]
local expected = tonumber(ARGV[2])
local now = now_ms()
local creating = ARGV[6] ~= ''
local moved_in = ARGV[12] ~= ''

-- An existing task, for the replay and duplicate checks and the fence; a new one is only read when
-- SET NX below finds it exists (the common path writes it without reading).
local function existing(t)
  if t and t.call == ARGV[4] then
    if t.state == 'assigned' and t.job == ARGV[4] then
      return { status = 'assigned', attempt = t.attempt, job_id = ARGV[4] }
    end
    if creating then return { status = 'waiting' } end
  end
  if creating and t and not (moved_in and t.state == 'moved') then
    return { status = 'duplicate', state = t.state }
  end
  return nil
end

local t
if creating then
  t = { state = 'waiting', attempt = expected, tried = '', spec = ARGV[6], payload = ARGV[7],
    max_attempts = tonumber(ARGV[9]), created_ms = now, ttl_ms = tonumber(ARGV[8]),
    wait_until = moved_in and tonumber(ARGV[12]) or now + tonumber(ARGV[10]),
    pool = ARGV[15], tenant = ARGV[16], weight = tonumber(ARGV[17]), band = tonumber(ARGV[18]),
    bound = tonumber(ARGV[19]), cap = tonumber(ARGV[21]), fifo = ARGV[20] ~= '1' or nil }
else
  t = load_task(tid)
  local reply = existing(t)
  if reply then return cjson.encode(reply) end
  if not t or t.state ~= 'waiting' or t.attempt ~= expected then
    return cjson.encode({ status = 'stale' })
  end
end

-- Writes the task in the state this call leaves it in; a new task only if none has its id (a
-- task moving back into a cell it left replaces its `moved` record). Returns the reply that
-- overrides this call's, when the task existed.
local function save()
  t.call = ARGV[4]
  if not creating then
    store_task(tid, t)
    return nil
  end
  if store_task(tid, t, true) then return nil end
  local reply = existing(load_task(tid))
  if reply then return reply end
  store_task(tid, t)
  return nil
end

local function fail(code)
  local spec = t.spec
  dequeue(tid, t, false)
  if creating then
    t = { state = 'failed', code = code, attempt = t.attempt, ttl_ms = t.ttl_ms }
    local other = save()
    if other then return cjson.encode(other) end
  else
    end_task(tid, t, 'failed', { code = code })
    redis.call('ZREM', KEYS[2], tid)
  end
  return cjson.encode({ status = 'failed', code = code, spec = spec })
end

-- The task waits: in the fair queue (entered once; lib.lua, queue_score), or held by its tenant's
-- cap (`held`), and for its next try. Returns nil, or the reply that ends the call instead (and
-- true when that reply is the task's failure: its tenant has the most tasks waiting).
local function park(held)
  local queued = t.fair ~= nil
  if not queued then
    t.fair = queue_score(t, true)
    if not t.fair then return fail('NODE_OVERLOADED'), true end
    t.held = held or nil
  else
    set_held(tid, t, held)
  end
  local other = save()
  if other then return cjson.encode(other) end
  if not queued then enqueue(tid, t) end
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[11]), tid)
  return nil
end

-- The task waits where it waited (queued, or held).
local function wait(reply)
  return park(t.held == true) or cjson.encode(reply)
end

if node == '' then
  if now < t.wait_until then
    return wait({ status = 'waiting' })
  end
  return fail('NO_AVAILABLE_NODE')
end

local n = redis.call('HMGET', KEYS[4], 'state', 'draining', 'capacity', 'class', 'last_hb', 'jobs')
local jobs = jobs_of(n[6])
local refused
if n[1] ~= 'online' then refused = 'offline'
elseif not is_live(n[5], ARGV[14], now) then refused = 'expired'
elseif n[2] ~= '0' then refused = 'draining'
elseif #jobs >= tonumber(n[3]) then refused = 'full'
elseif not n[4] or (ARGV[13] ~= '' and n[4] ~= ARGV[13])
    or (ARGV[13] == '' and redis.call('SISMEMBER', P .. 'pool:' .. ARGV[15], n[4]) == 0) then
  refused = 'wrong_pair'
elseif contains(t.tried, node) then refused = 'already_tried'
end
if refused then
  return wait({ status = 'refused', reason = refused })
end

-- Who takes the free slot (docs/overload.md). A task whose tenant is at its cap does not: it is
-- held. With the fair queue, a task the pool's queue puts first does: its head (lib.lua,
-- fair_head). Otherwise this task. One read on the common path (the queue's head).
local capped = at_cap(t)
if capped and now >= t.wait_until then return fail('NODE_OVERLOADED') end
local head, h
if ARGV[20] == '1' then
  local function mine()
    return capped and math.huge or (t.band or 1) * 1e12 + (t.fair or queue_score(t, false))
  end
  head, h = fair_head(ARGV[15], node, mine, tid)
end
local cap, timeout = tonumber(n[3]), tonumber(ARGV[5])

if head or capped then
  local ended, failed = park(capped)
  if ended and not failed then return ended end
  local handoff = cjson.null
  if head then
    local jid = string.match(ARGV[4], '^[^:]*') .. ':' .. head
    handoff = hand_off(head, h, node, n[4], cap, jobs, jid, now, timeout)
  end
  if failed then
    -- This task fails its tenant's bound; the slot still goes to the head.
    local reply = cjson.decode(ended)
    reply.handoff = handoff
    return cjson.encode(reply)
  end
  return cjson.encode({ status = capped and 'held' or 'queued', handoff = handoff })
end

local jid = ARGV[4]
assign(tid, t, node, jid, now)
local other = save()
if other then return cjson.encode(other) end
occupy(node, n[4], cap, jobs, t, jid, now, timeout)
if not creating then redis.call('ZREM', KEYS[2], tid) end
return cjson.encode({ status = 'assigned', attempt = t.attempt, job_id = jid })
