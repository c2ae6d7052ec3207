package backfill

import "github.com/redis/go-redis/v9"

// The queue's state machine. Each script is one transition, executed
// atomically by Redis; with AOF on, its effects are logged as one MULTI
// block, so a restart never replays half a transition.
//
// Per queue (key prefix P):
//
//	P seq              counter for job ids
//	P job:<id>         hash: kind dedupe types fids nfids traceparent tracestate
//	                   priority rank attempts state lease worker enqueued_at
//	                   claimed_at last_error failed_at
//	P ready            zset id → rank (priority jobs rank below normal ones)
//	P delayed          zset id → due time (ms), retries waiting out backoff
//	P inflight         zset id → lease deadline (ms)
//	P failed           zset id → time of failure (ms)
//	P pending:<dedupe> hash fid → id of the unfinished job holding the fid
//	P stats            hash of FID counters per state, done jobs
//	P rate:<bucket>    FIDs completed in a 10 s bucket (expires)
//
// Times come from the Redis server clock (TIME), so workers with skewed
// clocks agree on lease deadlines.
const luaPrelude = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function s(n) return string.format('%d', n) end
local function split(str)
  local out = {}
  if not str or str == '' then return out end
  for f in string.gmatch(str, '[^,]+') do out[#out + 1] = f end
  return out
end
local function drop_pending(prefix, jk, id, fids)
  local dedupe = redis.call('HGET', jk, 'dedupe')
  if not dedupe then return end
  local pk = prefix .. 'pending:' .. dedupe
  for _, f in ipairs(fids) do
    if redis.call('HGET', pk, f) == id then redis.call('HDEL', pk, f) end
  end
end
local function count_done(prefix, now, n)
  local rk = prefix .. 'rate:' .. s(math.floor(now / 10000))
  redis.call('INCRBY', rk, n)
  redis.call('EXPIRE', rk, 900)
end
local function to_failed(prefix, jk, id, n, msg, now, failed, stats)
  redis.call('HSET', jk, 'state', 'failed', 'last_error', msg, 'failed_at', s(now), 'lease', '')
  redis.call('ZADD', failed, s(now), id)
  redis.call('HINCRBY', stats, 'failed_fids', n)
  drop_pending(prefix, jk, id, split(redis.call('HGET', jk, 'fids')))
end
`

// normalRankBase puts normal jobs behind every priority job in the ready
// set: ranks are job sequence numbers, plus this base for normal jobs. It
// stays below 2^53 so scores remain exact.
const normalRankBase = "1000000000000"

// enqueueScript adds FIDs not already pending for the dedupe key as new
// jobs of at most batch FIDs. With priority, a pending FID's job that is
// still waiting is moved to the front instead; a FID whose job is already
// running gets a new job, since the running one may have read past the gap
// being repaired.
//
// KEYS: seq ready delayed pending stats
// ARGV: prefix kind dedupe types traceparent tracestate priority batch fid...
// Returns {jobs, fids queued, fids skipped, jobs promoted}.
var enqueueScript = redis.NewScript(luaPrelude + `
local prefix = ARGV[1]
local prio = ARGV[7] == '1'
local batch = tonumber(ARGV[8])
local now = now_ms()
local fresh, seen = {}, {}
local skipped, promoted = 0, 0
for i = 9, #ARGV do
  local fid = ARGV[i]
  if seen[fid] then
    skipped = skipped + 1
  else
    seen[fid] = true
    local jid = redis.call('HGET', KEYS[4], fid)
    local st = false
    if jid then st = redis.call('HGET', prefix .. 'job:' .. jid, 'state') end
    if not st or st == 'failed' then
      fresh[#fresh + 1] = fid
    elseif prio and (st == 'ready' or st == 'delayed') then
      local jk = prefix .. 'job:' .. jid
      if st == 'delayed' or redis.call('HGET', jk, 'priority') ~= '1' then
        local rank = redis.call('INCR', KEYS[1])
        redis.call('HSET', jk, 'priority', '1', 'rank', s(rank), 'state', 'ready')
        if st == 'delayed' then
          local n = tonumber(redis.call('HGET', jk, 'nfids'))
          redis.call('ZREM', KEYS[3], jid)
          redis.call('HINCRBY', KEYS[5], 'retry_fids', -n)
          redis.call('HINCRBY', KEYS[5], 'queued_fids', n)
        end
        redis.call('ZADD', KEYS[2], s(rank), jid)
        promoted = promoted + 1
      end
      skipped = skipped + 1
    elseif prio and st == 'inflight' then
      fresh[#fresh + 1] = fid
    else
      skipped = skipped + 1
    end
  end
end
local jobs = 0
local i = 1
while i <= #fresh do
  local last = math.min(i + batch - 1, #fresh)
  local id = redis.call('INCR', KEYS[1])
  local parts = {}
  for k = i, last do parts[#parts + 1] = fresh[k] end
  local rank = id
  if not prio then rank = id + tonumber(` + normalRankBase + `) end
  local jk = prefix .. 'job:' .. s(id)
  redis.call('HSET', jk, 'kind', ARGV[2], 'dedupe', ARGV[3], 'types', ARGV[4],
    'fids', table.concat(parts, ','), 'nfids', s(#parts),
    'traceparent', ARGV[5], 'tracestate', ARGV[6], 'priority', prio and '1' or '0',
    'rank', s(rank), 'attempts', '0', 'state', 'ready', 'enqueued_at', s(now))
  redis.call('ZADD', KEYS[2], s(rank), s(id))
  for _, f in ipairs(parts) do redis.call('HSET', KEYS[4], f, s(id)) end
  redis.call('HINCRBY', KEYS[5], 'queued_fids', #parts)
  jobs = jobs + 1
  i = last + 1
end
return {jobs, #fresh, skipped, promoted}
`)

// claimScript first moves due retries to the ready set and takes over jobs
// whose lease expired (or fails them when they used up their attempts),
// then hands the best-ranked ready job to the caller under a new lease.
//
// KEYS: ready delayed inflight failed stats
// ARGV: prefix worker visibility_ms max_attempts lease
// Returns {id, field, value, ...} or nil when nothing is ready.
var claimScript = redis.NewScript(luaPrelude + `
local prefix = ARGV[1]
local vis = tonumber(ARGV[3])
local max = tonumber(ARGV[4])
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', s(now), 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  local jk = prefix .. 'job:' .. id
  local rank = redis.call('HGET', jk, 'rank')
  if rank then
    local n = tonumber(redis.call('HGET', jk, 'nfids'))
    redis.call('HSET', jk, 'state', 'ready')
    redis.call('ZADD', KEYS[1], rank, id)
    redis.call('HINCRBY', KEYS[5], 'retry_fids', -n)
    redis.call('HINCRBY', KEYS[5], 'queued_fids', n)
  end
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', s(now), 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[3], id)
  local jk = prefix .. 'job:' .. id
  local rank = redis.call('HGET', jk, 'rank')
  if rank then
    local n = tonumber(redis.call('HGET', jk, 'nfids'))
    local attempts = tonumber(redis.call('HGET', jk, 'attempts'))
    local msg = 'lease expired: worker ' .. (redis.call('HGET', jk, 'worker') or '?') ..
      ' stopped renewing it during attempt ' .. attempts
    redis.call('HINCRBY', KEYS[5], 'inflight_fids', -n)
    if attempts >= max then
      to_failed(prefix, jk, id, n, msg, now, KEYS[4], KEYS[5])
    else
      redis.call('HSET', jk, 'state', 'ready', 'last_error', msg, 'lease', '')
      redis.call('ZADD', KEYS[1], rank, id)
      redis.call('HINCRBY', KEYS[5], 'queued_fids', n)
    end
  end
end
while true do
  local popped = redis.call('ZPOPMIN', KEYS[1])
  if #popped == 0 then return false end
  local id = popped[1]
  local jk = prefix .. 'job:' .. id
  local n = redis.call('HGET', jk, 'nfids')
  if n then
    redis.call('HINCRBY', jk, 'attempts', 1)
    redis.call('HSET', jk, 'state', 'inflight', 'lease', ARGV[5], 'worker', ARGV[2], 'claimed_at', s(now))
    redis.call('ZADD', KEYS[3], s(now + vis), id)
    redis.call('HINCRBY', KEYS[5], 'queued_fids', -tonumber(n))
    redis.call('HINCRBY', KEYS[5], 'inflight_fids', tonumber(n))
    local out = redis.call('HGETALL', jk)
    table.insert(out, 1, id)
    return out
  end
end
`)

// completeScript acknowledges a job held under lease: its FIDs count as
// done and leave the pending map, and the job is deleted.
//
// KEYS: inflight stats
// ARGV: prefix id lease
// Returns 1, or 0 when the lease is no longer the job's.
var completeScript = redis.NewScript(luaPrelude + `
local prefix, id = ARGV[1], ARGV[2]
local jk = prefix .. 'job:' .. id
if redis.call('HGET', jk, 'state') ~= 'inflight' or redis.call('HGET', jk, 'lease') ~= ARGV[3] then
  return 0
end
local now = now_ms()
local fids = split(redis.call('HGET', jk, 'fids'))
redis.call('ZREM', KEYS[1], id)
redis.call('HINCRBY', KEYS[2], 'inflight_fids', -#fids)
redis.call('HINCRBY', KEYS[2], 'done_jobs', 1)
redis.call('HINCRBY', KEYS[2], 'done_fids', #fids)
drop_pending(prefix, jk, id, fids)
count_done(prefix, now, #fids)
redis.call('DEL', jk)
return 1
`)

// failScript records a failed attempt of a job held under lease. FIDs not
// named in failed_fids succeeded and count as done; the rest stay in the
// job, which waits backoff_ms in the delayed set, or moves to the failed
// set once it has used max_attempts.
//
// KEYS: inflight delayed failed stats
// ARGV: prefix id lease error backoff_ms max_attempts failed_fids
// Returns 1 (will retry), 2 (failed for good) or 0 (lease lost).
var failScript = redis.NewScript(luaPrelude + `
local prefix, id = ARGV[1], ARGV[2]
local jk = prefix .. 'job:' .. id
if redis.call('HGET', jk, 'state') ~= 'inflight' or redis.call('HGET', jk, 'lease') ~= ARGV[3] then
  return 0
end
local now = now_ms()
local all = split(redis.call('HGET', jk, 'fids'))
redis.call('ZREM', KEYS[1], id)
redis.call('HINCRBY', KEYS[4], 'inflight_fids', -#all)
local failed = all
if ARGV[7] ~= '' then
  local want = {}
  for _, f in ipairs(split(ARGV[7])) do want[f] = true end
  local ok = {}
  failed = {}
  for _, f in ipairs(all) do
    if want[f] then failed[#failed + 1] = f else ok[#ok + 1] = f end
  end
  if #failed == 0 then
    failed, ok = all, {}
  end
  if #ok > 0 then
    redis.call('HINCRBY', KEYS[4], 'done_fids', #ok)
    drop_pending(prefix, jk, id, ok)
    count_done(prefix, now, #ok)
    redis.call('HSET', jk, 'fids', table.concat(failed, ','), 'nfids', s(#failed))
  end
end
local attempts = tonumber(redis.call('HGET', jk, 'attempts'))
if attempts >= tonumber(ARGV[6]) then
  to_failed(prefix, jk, id, #failed, ARGV[4], now, KEYS[3], KEYS[4])
  return 2
end
redis.call('HSET', jk, 'state', 'delayed', 'last_error', ARGV[4], 'lease', '')
redis.call('ZADD', KEYS[2], s(now + tonumber(ARGV[5])), id)
redis.call('HINCRBY', KEYS[4], 'retry_fids', #failed)
return 1
`)

// extendScript renews a lease for another visibility timeout.
//
// KEYS: inflight
// ARGV: prefix id lease visibility_ms
// Returns 1, or 0 when the lease is no longer the job's.
var extendScript = redis.NewScript(luaPrelude + `
local jk = ARGV[1] .. 'job:' .. ARGV[2]
if redis.call('HGET', jk, 'state') ~= 'inflight' or redis.call('HGET', jk, 'lease') ~= ARGV[3] then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', s(now_ms() + tonumber(ARGV[4])), ARGV[2])
return 1
`)

// releaseScript gives a job back unfinished without spending an attempt,
// for a worker shutting down cleanly.
//
// KEYS: inflight ready stats
// ARGV: prefix id lease
// Returns 1, or 0 when the lease is no longer the job's.
var releaseScript = redis.NewScript(luaPrelude + `
local prefix, id = ARGV[1], ARGV[2]
local jk = prefix .. 'job:' .. id
if redis.call('HGET', jk, 'state') ~= 'inflight' or redis.call('HGET', jk, 'lease') ~= ARGV[3] then
  return 0
end
local n = tonumber(redis.call('HGET', jk, 'nfids'))
redis.call('ZREM', KEYS[1], id)
redis.call('HINCRBY', jk, 'attempts', -1)
redis.call('HSET', jk, 'state', 'ready', 'lease', '')
redis.call('ZADD', KEYS[2], redis.call('HGET', jk, 'rank'), id)
redis.call('HINCRBY', KEYS[3], 'inflight_fids', -n)
redis.call('HINCRBY', KEYS[3], 'queued_fids', n)
return 1
`)

// retryFailedScript moves up to limit failed jobs back to the ready set
// with a fresh attempt budget.
//
// KEYS: failed ready stats
// ARGV: prefix limit
// Returns the number of jobs moved.
var retryFailedScript = redis.NewScript(luaPrelude + `
local prefix = ARGV[1]
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local jk = prefix .. 'job:' .. id
  local rank = redis.call('HGET', jk, 'rank')
  if rank then
    local fids = split(redis.call('HGET', jk, 'fids'))
    redis.call('HSET', jk, 'state', 'ready', 'attempts', '0', 'failed_at', '')
    redis.call('ZADD', KEYS[2], rank, id)
    redis.call('HINCRBY', KEYS[3], 'failed_fids', -#fids)
    redis.call('HINCRBY', KEYS[3], 'queued_fids', #fids)
    local pk = prefix .. 'pending:' .. redis.call('HGET', jk, 'dedupe')
    for _, f in ipairs(fids) do redis.call('HSETNX', pk, f, id) end
  end
end
return #ids
`)
