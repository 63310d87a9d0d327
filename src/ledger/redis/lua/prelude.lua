-- Shared by the ledger scripts: the clock, the bounds, the debit record and
-- the window's bookkeeping (docs/ledger.md describes the layout).
--
-- Lua numbers are doubles, exact for integers up to 2^53. Costs, allowances
-- and totals are kept at most MAX_CREDITS (10^15, `ledger/bounds.rs`), so
-- every sum made here — a total plus a cost — stays below 2^53 and is exact.
-- Timestamps are unix ms, far below 2^53.
--
-- An account is the hash `a` — plan, suspended, used (credits counted in the
-- window), seen (the instant up to which debits that left the window have
-- been subtracted from used), first (at of the oldest debit still counting,
-- -1 when none), sweep (when history past its retention is next dropped),
-- r:<route> / n:<number> (the account's route names by number), nr (how
-- many) — and the sorted set `w` with one member
-- per debit kept for history (score = at, unix ms). A member is the packed
-- debit record:
--   1 byte    2 * (the id is packed) + (refunded)
--   the id    8 bytes (16 lower-case hex digits, packed), or a varint
--             length and the id's bytes
--   varint    cost
--   varint    route number
-- so a debit costs one small sorted-set entry and nothing else. Ids of any
-- other form are also kept in the hash `i` (id → at) so a reused id is
-- caught; packed ids are the gateway's own 64 random bits.
--
-- Usage aggregates (the hash `u`): for the debits that count (not refunded,
-- at > seen), their credits and number by UTC day of the debit and route
-- number, and their credits by the UTC day on which they leave the window:
--   c:<day>:<route>  credits    n:<day>:<route>  debits    r:<day>  credits leaving
-- (<day> = UTC days since 1970-01-01; a field at zero is deleted). With a
-- window of whole days the leave day is the debit's day plus the window, so
-- `r:` fields are not written: the report derives them from `c:` (one call
-- less per debit). They are
-- kept by the same steps that keep `used`, so they always add up to it. The
-- account hash field `uw` holds the window (ms) they were built for; without
-- it (an account from before the aggregates, or a changed window) they are
-- not kept until the window is empty, or until the usage read rebuilds them.

local MAX_CREDITS = 1000000000000000
local MAX_EXACT = 9007199254740991

-- Whether x is an integer in [low, high] (false for nil, NaN, inf).
local function whole(x, low, high)
  return x ~= nil and x == math.floor(x) and x >= low and x <= high
end

local function ledger_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(n)
  return string.format('%.0f', n)
end

local function varint(n)
  local out = ''
  repeat
    local low = n % 128
    n = (n - low) / 128
    if n > 0 then low = low + 128 end
    out = out .. string.char(low)
  until n == 0
  return out
end

local function read_varint(s, pos)
  local n, scale = 0, 1
  while true do
    local b = string.byte(s, pos)
    pos = pos + 1
    if b < 128 then return n + b * scale, pos end
    n = n + (b - 128) * scale
    scale = scale * 128
  end
end

-- flags, the id part (without the flags byte), cost, route number.
local function parse(m)
  local flags = string.byte(m, 1)
  local pos = 10
  if flags < 2 then
    local len
    len, pos = read_varint(m, 2)
    pos = pos + len
  end
  local cost, after = read_varint(m, pos)
  local route = read_varint(m, after)
  return flags, string.sub(m, 2, pos - 1), cost, route
end

local function counts(m)
  return string.byte(m, 1) % 2 == 0
end

local function cost_of(m)
  local _, _, cost = parse(m)
  return cost
end

-- The cost and route number of a record, without copying its id.
local function cost_route(m)
  local pos = 10
  if string.byte(m, 1) < 2 then
    local len
    len, pos = read_varint(m, 2)
    pos = pos + len
  end
  local cost, after = read_varint(m, pos)
  return cost, read_varint(m, after)
end

local DAY_MS = 86400000

-- The aggregates to keep for an account whose `uw` field is `built_for`:
-- {key, window}, or nil when they are not kept.
local function usage_keeper(ku, built_for, window_ms)
  if tonumber(built_for or '') == window_ms then return { key = ku, window = window_ms } end
  return nil
end

-- Whether the leave day must be kept apart (a window of whole days derives it).
local function leave_days_kept(window_ms)
  return window_ms % DAY_MS ~= 0
end

-- Adds one debit's share (credits may be negative) to `deltas` (field → change).
local function usage_add(deltas, at, route, credits, requests, window_ms)
  local spent = int(math.floor(at / DAY_MS)) .. ':' .. int(route)
  deltas['c:' .. spent] = (deltas['c:' .. spent] or 0) + credits
  deltas['n:' .. spent] = (deltas['n:' .. spent] or 0) + requests
  if leave_days_kept(window_ms) then
    local leaves = 'r:' .. int(math.floor((at + window_ms) / DAY_MS))
    deltas[leaves] = (deltas[leaves] or 0) + credits
  end
end

-- Totals of whole debits for a rebuild: summed in numeric tables, one
-- lookup per debit, the field names built once at the end (a rebuild may
-- visit a million debits).
local function new_totals()
  return { spent = {}, count = {}, leaving = {} }
end

local function total_add(totals, at, route, cost, window_ms)
  local day = math.floor(at / DAY_MS)
  local spent, count = totals.spent[day], totals.count[day]
  if not spent then
    spent, count = {}, {}
    totals.spent[day], totals.count[day] = spent, count
  end
  spent[route] = (spent[route] or 0) + cost
  count[route] = (count[route] or 0) + 1
  local leaves = math.floor((at + window_ms) / DAY_MS)
  totals.leaving[leaves] = (totals.leaving[leaves] or 0) + cost
end

-- Replaces the aggregates by `totals` and marks them kept for this window;
-- returns the keeper.
local function usage_write(ka, ku, totals, window_ms)
  redis.call('DEL', ku)
  local batch = {}
  local function put(field, value)
    if value <= 0 then return end
    batch[#batch + 1] = field
    batch[#batch + 1] = int(value)
    if #batch >= 512 then
      redis.call('HSET', ku, unpack(batch))
      batch = {}
    end
  end
  for day, routes in pairs(totals.spent) do
    for route, credits in pairs(routes) do
      put('c:' .. int(day) .. ':' .. int(route), credits)
      put('n:' .. int(day) .. ':' .. int(route), totals.count[day][route])
    end
  end
  if leave_days_kept(window_ms) then
    for day, credits in pairs(totals.leaving) do put('r:' .. int(day), credits) end
  end
  if #batch > 0 then redis.call('HSET', ku, unpack(batch)) end
  redis.call('HSET', ka, 'uw', int(window_ms))
  return { key = ku, window = window_ms }
end

-- The window's bookkeeping from the account hash fields used, seen, first,
-- with the aggregates `usage` keeps (nil: none); or nil and the name of the
-- first field that holds no valid value (an older build, or a hand edit,
-- may have written one). Nothing is computed from such a state: the callers
-- report it, and the admin recount repairs it. Changes to the aggregates
-- wait in `deltas` until the state is saved, so a script that returns
-- without saving writes none of them either.
local function window_state(used, seen, first, usage)
  local state = { used = tonumber(used or '0'), seen = tonumber(seen or '0'), first = tonumber(first or '-1'),
    usage = usage, deltas = {} }
  if not whole(state.used, 0, MAX_CREDITS) then return nil, 'used' end
  if not whole(state.seen, 0, MAX_EXACT) then return nil, 'seen' end
  if not whole(state.first, -1, MAX_EXACT) then return nil, 'first' end
  return state
end

-- A debit's share into the aggregates, when they are kept.
local function count_usage(state, at, route, credits, requests)
  if state.usage then usage_add(state.deltas, at, route, credits, requests, state.usage.window) end
end

-- Subtracts the debits that left the window since `seen` (at <= cutoff)
-- from `used` and the aggregates, and moves `seen` to the cutoff. Work is
-- proportional to what left, never to the window's size.
local function expire(kw, state, cutoff)
  if cutoff <= state.seen then return end
  local offset = 0
  while true do
    local left = redis.call('ZRANGEBYSCORE', kw, '(' .. int(state.seen), int(cutoff), 'WITHSCORES', 'LIMIT', offset, 512)
    for i = 1, #left, 2 do
      if counts(left[i]) then
        local _, _, cost, route = parse(left[i])
        state.used = state.used - cost
        count_usage(state, tonumber(left[i + 1]), route, -cost, -1)
      end
    end
    if #left < 1024 then break end
    offset = offset + 512
  end
  if state.used < 0 then state.used = 0 end
  state.seen = cutoff
end

-- The at of the oldest debit still counting (at > cutoff, not refunded),
-- or nil when nothing counts.
local function oldest_counting(kw, cutoff)
  local offset = 0
  while true do
    local batch = redis.call('ZRANGEBYSCORE', kw, '(' .. int(cutoff), '+inf', 'WITHSCORES', 'LIMIT', offset, 16)
    if #batch == 0 then return nil end
    for i = 1, #batch, 2 do
      if counts(batch[i]) then return tonumber(batch[i + 1]) end
    end
    offset = offset + 16
  end
end

-- Calls `visit(member, at)` for every debit counting at `cutoff` (at >
-- cutoff, not refunded), oldest first: a scan of the window, paged by rank
-- (each page costs O(log n + page), whatever the window's size).
local function each_counting(kw, cutoff, visit)
  local rank = redis.call('ZCOUNT', kw, '-inf', int(cutoff))
  while true do
    local batch = redis.call('ZRANGE', kw, rank, rank + 1023, 'WITHSCORES')
    for i = 1, #batch, 2 do
      if counts(batch[i]) then visit(batch[i], tonumber(batch[i + 1])) end
    end
    if #batch < 2048 then return end
    rank = rank + 1024
  end
end

-- Rebuilds the aggregates from the debits counting in the window (a scan,
-- for the usage read of an account whose aggregates are not kept yet or
-- disagree with `used`); returns the keeper.
local function usage_rebuild(ka, kw, ku, cutoff, window_ms)
  local totals = new_totals()
  each_counting(kw, cutoff, function(m, at)
    local cost, route = cost_route(m)
    total_add(totals, at, route, cost, window_ms)
  end)
  return usage_write(ka, ku, totals, window_ms)
end

-- Brings the window to `cutoff` (= now - window). Nothing is read while the
-- oldest counting debit is still inside, which is almost every call: a debit
-- then costs no range query at all. Returns true when the state changed.
local function advance(kw, state, cutoff)
  if state.first < 0 or state.first > cutoff then return false end
  expire(kw, state, cutoff)
  state.first = oldest_counting(kw, cutoff) or -1
  return true
end

-- Every field of the state back into the account hash, and the pending
-- changes into the aggregates (a field that reaches zero goes).
local function save_state(ka, state)
  redis.call('HSET', ka, 'used', int(state.used), 'seen', int(state.seen), 'first', int(state.first))
  if not state.usage then return end
  for field, delta in pairs(state.deltas) do
    if delta ~= 0 and redis.call('HINCRBY', state.usage.key, field, int(delta)) <= 0 then
      redis.call('HDEL', state.usage.key, field)
    end
  end
  state.deltas = {}
end

-- Milliseconds until the oldest counted debit leaves, or -1.
local function next_release_in(state, now, window_ms)
  if state.first < 0 then return -1 end
  return state.first + window_ms - now
end

-- Drops a bounded batch of debits older than the history retention (they
-- left the window long ago: `expire` has already run) and their id entries.
-- Returns true when the batch was full (more may be waiting).
local function sweep(kw, ki, before)
  local old = redis.call('ZRANGEBYSCORE', kw, '-inf', int(before), 'LIMIT', 0, 1024)
  if #old == 0 then return false end
  for i = 1, #old do
    local flags, id = parse(old[i])
    if flags < 2 then
      local _, start = read_varint(id, 1)
      redis.call('HDEL', ki, string.sub(id, start))
    end
  end
  for i = 1, #old, 256 do
    redis.call('ZREM', kw, unpack(old, i, math.min(i + 255, #old)))
  end
  return #old == 1024
end

-- The member for the debit recorded under `request_id`, and its at. `packed`
-- and `text` are the id's two possible encodings (flags byte + id part, as
-- the gateway builds them; `packed` is '' when the id cannot be packed). It is
-- looked for at `at` when known (the gateway's own refunds and settlements;
-- between `at` and `till` for a debit whose call failed), else through the index of text ids, else — a packed id without its time,
-- admin refunds only — by a scan of the account's history.
local function find_debit(kw, ki, packed, text, request_id, at, till)
  local function same(m)
    local want = text
    if string.byte(m, 1) >= 2 then want = packed end
    -- Text ids carry their length, so a prefix match is the whole id.
    return want ~= '' and string.sub(m, 2, #want) == string.sub(want, 2)
  end
  local function recorded_at(t, last)
    local here = redis.call('ZRANGEBYSCORE', kw, int(t), int(last or t), 'WITHSCORES')
    for i = 1, #here, 2 do
      if same(here[i]) then return here[i], tonumber(here[i + 1]) end
    end
    return nil
  end
  if at then return recorded_at(at, till) end
  local indexed = tonumber(redis.call('HGET', ki, request_id))
  if indexed then
    local member = recorded_at(indexed)
    if member then return member, indexed end
  end
  if packed == '' then return nil end
  local offset = 0
  while true do
    local batch = redis.call('ZRANGE', kw, offset, offset + 1023, 'WITHSCORES')
    if #batch == 0 then return nil end
    for i = 1, #batch, 2 do
      if same(batch[i]) then return batch[i], tonumber(batch[i + 1]) end
    end
    offset = offset + 1024
  end
end

-- Threshold alerts (docs/alerts.md): the one hook the debit calls. A
-- threshold is given in millionths of the allowance; its level in credits
-- is ceil(ppm * allowance / 10^6), computed exactly (ppm * allowance may be
-- beyond 2^53, so it is split at 10^6; `ledger/alerts.rs` computes the same
-- in integers). A debit that takes `used` from `before` (after the window
-- was brought up to date) to `after` crosses every level with
-- before < level <= after, and queues one alert for each in the account's
-- queue `kq` (field = the alert's number, from the account hash's `an`):
--   p <next attempt> <attempts> <at> <threshold ppm> <used> <allowance> <available>
-- Nothing is remembered between debits: a threshold is armed again as soon
-- as `used` is below it (debits leaving the window, refunds). A queue
-- holding ALERTS_MAX_QUEUED alerts (a receiver down for long) takes no more.
-- Returns how many alerts it queued. Also called by the settlement of a
-- reservation (settle.lua), which may take `used` across a threshold.
local ALERTS_MAX_QUEUED = 1000
local alert_lists = {}

local function alert_level(ppm, allowance)
  local high = math.floor(allowance / 1000000)
  local low = allowance - high * 1000000
  local part = ppm * low
  local up = math.floor(part / 1000000)
  if up * 1000000 < part then up = up + 1 end
  return ppm * high + up
end

local function queue_crossed_alerts(ka, kq, list, before, after, allowance, now)
  if list == '' or after <= before then return 0 end
  local thresholds = alert_lists[list]
  if not thresholds then
    thresholds = {}
    for ppm in string.gmatch(list, '%d+') do thresholds[#thresholds + 1] = tonumber(ppm) end
    alert_lists[list] = thresholds
  end
  local available = allowance - after
  if available < 0 then available = 0 end
  local queued = 0
  for i = 1, #thresholds do
    local level = alert_level(thresholds[i], allowance)
    if before < level and level <= after and redis.call('HLEN', kq) < ALERTS_MAX_QUEUED then
      local number = redis.call('HINCRBY', ka, 'an', 1)
      redis.call('HSET', kq, number, 'p ' .. int(now) .. ' 0 ' .. int(now) .. ' ' .. int(thresholds[i]) .. ' '
        .. int(after) .. ' ' .. int(allowance) .. ' ' .. int(available))
      queued = queued + 1
    end
  end
  return queued
end
