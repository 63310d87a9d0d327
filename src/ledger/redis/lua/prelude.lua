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
--   (flag 4, flags < 8 only) varint the part paid from the allowance, varint
--             the number of grant parts, then per part: varint grant
--             number, varint credits — in the order they were taken
--             (docs/ledger.md, "Prepaid grants")
-- so a debit costs one small sorted-set entry and nothing else. The flags
-- byte is 8 * g + 4 * (grants paid some of it) + 2 * (the id is packed) +
-- (refunded), where g (1-31) says that grant g alone paid all of it: then
-- no split follows, and the member is no longer than one the allowance paid. Ids of any
-- other form are also kept in the hash `i` (id → at) so a reused id is
-- caught; packed ids are the gateway's own 64 random bits.
--
-- Usage aggregates (the hash `u`): for the debits that count (not refunded,
-- at > seen), their credits (the full cost) and number by UTC day of the
-- debit and route number, what of those credits grants paid by day, and the
-- allowance credits by the UTC day on which they leave the window:
--   c:<day>:<route>  credits    n:<day>:<route>  debits    g:<day>  from grants
--   r:<day>  allowance credits leaving
-- (<day> = UTC days since 1970-01-01; a field at zero is deleted). With a
-- window of whole days the leave day is the debit's day plus the window, so
-- `r:` fields are not written: the report derives them from `c:` less `g:`
-- (one call less per debit). They are
-- kept by the same steps that keep `used`, so they always add up to it. The
-- account hash field `uw` holds the window (ms) they were built for; without
-- it (an account from before the aggregates, or a changed window) they are
-- not kept until the window is empty, or until the usage read rebuilds them.
--
-- Extra windows (a plan's `limits`): the account hash field `lw` lists the
-- window lengths (ms, comma-separated) whose running totals are kept, and
-- `l:<ms>`, `lf:<ms>`, `ls:<ms>` hold each one's used, first and seen over
-- the same sorted set (the full cost of every debit not refunded). Plain
-- numbers, so that a debit whose window has nothing leaving reads only
-- `l:` and `lf:` and rewrites only `l:`. A debit or a balance read brings
-- `lw` to its plan's windows, building a new window's total once from the
-- debits inside it; refunds and settlements keep every window `lw` lists.
--
-- Prepaid grants (the hash `g`): `<n>` → "credits remaining expires created
-- voided" (unix ms, expires -1 = never) and `<n>:note`; the account hash
-- keeps `gn` (the last grant number), `gs` (the credits remaining in grants
-- unexpired at the last look) and `ge` (the soonest expiry among those with
-- credits left, -1 when none): grants are read only when `ge` has passed or
-- a debit needs them.

local MAX_CREDITS = 1000000000000000
local MAX_EXACT = 9007199254740991

-- Whether x is an integer in [low, high] (false for nil, NaN, inf).
-- (`x % 1 == 0` rather than math.floor: no call, and false for NaN and the
-- infinities too; this runs for every window of every debit.)
local function whole(x, low, high)
  return x ~= nil and x % 1 == 0 and x >= low and x <= high
end

local function ledger_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An integer as text (string.format's %d: one sprintf, far cheaper than
-- %.0f; every value formatted here is a whole number below 2^53).
local function int(n)
  return string.format('%d', n)
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
  if flags % 4 < 2 then
    local len
    len, pos = read_varint(m, 2)
    pos = pos + len
  end
  local cost, after = read_varint(m, pos)
  local route, rest = read_varint(m, after)
  return flags, string.sub(m, 2, pos - 1), cost, route, rest
end

-- The part of a record paid from the allowance and its grant parts
-- ({number, credits, ...} in the order taken), given parse's results.
local function split_of(m, flags, cost, rest)
  if flags < 4 then return cost, {} end
  if flags >= 8 then return 0, { math.floor(flags / 8), cost } end
  local allowance, pos = read_varint(m, rest)
  local count
  count, pos = read_varint(m, pos)
  local parts = {}
  for _ = 1, count do
    local number, credits
    number, pos = read_varint(m, pos)
    credits, pos = read_varint(m, pos)
    parts[#parts + 1] = number
    parts[#parts + 1] = credits
  end
  return allowance, parts
end

-- The record's tail after the id: cost, route and, when grants paid part of
-- it, the split. Its flags then carry 4.
local function tail_of(cost, route, allowance, parts)
  local tail = varint(cost) .. varint(route)
  if #parts == 0 then return tail, 0 end
  if allowance == 0 and #parts == 2 and parts[1] < 32 then return tail, 4 + 8 * parts[1] end
  tail = tail .. varint(allowance) .. varint(#parts / 2)
  for i = 1, #parts do tail = tail .. varint(parts[i]) end
  return tail, 4
end

local function counts(m)
  return string.byte(m, 1) % 2 == 0
end

local function cost_of(m)
  local _, _, cost = parse(m)
  return cost
end

-- The cost, route number and allowance part of a record, without copying
-- its id.
local function cost_route(m)
  local flags = string.byte(m, 1)
  local pos = 10
  if flags % 4 < 2 then
    local len
    len, pos = read_varint(m, 2)
    pos = pos + len
  end
  local cost, after = read_varint(m, pos)
  local route, rest = read_varint(m, after)
  if flags < 4 then return cost, route, cost end
  if flags >= 8 then return cost, route, 0 end
  return cost, route, (read_varint(m, rest))
end

-- The part of a record paid from the allowance.
local function allowance_of(m)
  local _, _, allowance = cost_route(m)
  return allowance
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

-- Adds one debit's share (credits may be negative; `from_grants` of them
-- paid by grants) to `deltas` (field → change).
local function usage_add(deltas, at, route, credits, requests, window_ms, from_grants)
  local day = int(math.floor(at / DAY_MS))
  local spent = day .. ':' .. int(route)
  deltas['c:' .. spent] = (deltas['c:' .. spent] or 0) + credits
  deltas['n:' .. spent] = (deltas['n:' .. spent] or 0) + requests
  if from_grants ~= 0 then
    deltas['g:' .. day] = (deltas['g:' .. day] or 0) + from_grants
  end
  if leave_days_kept(window_ms) then
    local leaves = 'r:' .. int(math.floor((at + window_ms) / DAY_MS))
    deltas[leaves] = (deltas[leaves] or 0) + credits - from_grants
  end
end

-- Totals of whole debits for a rebuild: summed in numeric tables, one
-- lookup per debit, the field names built once at the end (a rebuild may
-- visit a million debits).
local function new_totals()
  return { spent = {}, count = {}, leaving = {}, grants = {} }
end

local function total_add(totals, at, route, cost, window_ms, allowance)
  local day = math.floor(at / DAY_MS)
  local spent, count = totals.spent[day], totals.count[day]
  if not spent then
    spent, count = {}, {}
    totals.spent[day], totals.count[day] = spent, count
  end
  spent[route] = (spent[route] or 0) + cost
  count[route] = (count[route] or 0) + 1
  if allowance < cost then totals.grants[day] = (totals.grants[day] or 0) + cost - allowance end
  local leaves = math.floor((at + window_ms) / DAY_MS)
  totals.leaving[leaves] = (totals.leaving[leaves] or 0) + allowance
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
  for day, credits in pairs(totals.grants) do put('g:' .. int(day), credits) end
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
local function count_usage(state, at, route, credits, requests, from_grants)
  if state.usage then usage_add(state.deltas, at, route, credits, requests, state.usage.window, from_grants or 0) end
end

-- Subtracts the debits that left the window since `seen` (at <= cutoff)
-- from `used` and the aggregates, and moves `seen` to the cutoff. Work is
-- proportional to what left, never to the window's size. The 30-day window
-- counts a debit's allowance part; an extra window (`state.full`) its cost.
local function expire(kw, state, cutoff)
  if cutoff <= state.seen then return end
  local offset = 0
  while true do
    local left = redis.call('ZRANGEBYSCORE', kw, '(' .. int(state.seen), int(cutoff), 'WITHSCORES', 'LIMIT', offset, 512)
    for i = 1, #left, 2 do
      if counts(left[i]) then
        local cost, route, allowance = cost_route(left[i])
        if state.full then
          state.used = state.used - cost
        else
          state.used = state.used - allowance
          count_usage(state, tonumber(left[i + 1]), route, -cost, -1, allowance - cost)
        end
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
    local cost, route, allowance = cost_route(m)
    total_add(totals, at, route, cost, window_ms, allowance)
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

-- Every field of the state back into the account hash (with `more`, other
-- field/value pairs to write in the same call), and the pending changes into
-- the aggregates (a field that reaches zero goes).
local function save_state(ka, state, more)
  if more and #more > 0 then
    redis.call('HSET', ka, 'used', int(state.used), 'seen', int(state.seen), 'first', int(state.first), unpack(more))
  else
    redis.call('HSET', ka, 'used', int(state.used), 'seen', int(state.seen), 'first', int(state.first))
  end
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
    if flags % 4 < 2 then
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
-- between `at` and `till` for a debit whose call failed), else through the
-- index of text ids, else — a packed id without its time, admin refunds
-- only — by a scan of the account's history.
local function find_debit(kw, ki, packed, text, request_id, at, till)
  local function same(m)
    local want = text
    if string.byte(m, 1) % 4 >= 2 then want = packed end
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

-- Extra windows ----------------------------------------------------------

-- The account hash fields of the extra window of `ms` ('<ms>'): its used,
-- first and seen.
local function limit_field_names(ms)
  return { 'l:' .. ms, 'lf:' .. ms, 'ls:' .. ms }
end

-- A plan's extra windows from their ARGV form ("<ms>:<credits>,…", '' for
-- none): {{ms, credits, the names of their fields `l:`, `lf:`, `ls:`}, …}
-- in the config's order.
local function parse_limits(spec)
  local limits = {}
  for ms, credits in string.gmatch(spec, '(%d+):(%d+)') do
    limits[#limits + 1] = { ms = tonumber(ms), key = ms, credits = tonumber(credits),
      fields = limit_field_names(ms) }
  end
  return limits
end

-- The `lw` value for these windows.
local function limits_key(limits)
  local names = {}
  for i = 1, #limits do names[i] = limits[i].key end
  return table.concat(names, ',')
end

-- An extra window's state from its fields `l:`, `lf:` and `ls:` (used,
-- first, seen); nil when one is missing or not valid (it is derived data:
-- the caller rebuilds or drops it). `seen` is only needed when debits
-- leave the window (and by refunds): the debit passes `false` for it, and
-- `window_seen` reads it when it is. A value in the layout of earlier
-- versions ("used seen first" in `l:` alone) is not a number, so such a
-- window is rebuilt once. The table is built whole (a field added later
-- would grow it).
local function limit_state(used, first, seen, ms, fields)
  used, first = tonumber(used), tonumber(first)
  if not whole(used, 0, MAX_EXACT) or not whole(first, -1, MAX_EXACT) then return nil end
  if seen ~= false then
    seen = tonumber(seen)
    if not whole(seen, 0, MAX_EXACT) then return nil end
  end
  return { used = used, first = first, seen = seen, full = true, ms = ms, fields = fields, dirty = false }
end

-- Reads a window's `seen` when the debit did not (false: missing or not
-- valid).
local function window_seen(ka, state)
  if state.seen == false then
    local seen = tonumber(redis.call('HGET', ka, state.fields[3]))
    if not whole(seen, 0, MAX_EXACT) then return false end
    state.seen = seen
  end
  return true
end

-- An extra window's state built from the debits inside it (once, when the
-- window is new to the account: a scan of that window only).
local function limit_build(kw, cutoff, ms, fields)
  local state = { used = 0, first = -1, seen = cutoff, full = true, ms = ms, fields = fields, dirty = true }
  each_counting(kw, cutoff, function(m, at)
    state.used = state.used + cost_of(m)
    if state.first < 0 then state.first = at end
  end)
  return state
end

-- Brings the windows kept for the account (`lw`) to `limits`, the plan's:
-- drops the others, builds the new ones, advances each to now. `stored`
-- holds the windows' fields as read (HMGET), `at` maps '<ms>' to the
-- position of its `l:` value there, `lf:` next and, when `with_seen`,
-- `ls:`. Returns the states in the plan's order (`dirty` set on those
-- whose `seen` or `first` changed). `want` is `limits_key(limits)` when
-- the caller has it.
local function limits_sync(ka, kw, limits, lw, stored, at, with_seen, now, want)
  want = want or limits_key(limits)
  local same = (lw or '') == want
  local kept = {}
  if not same then
    for ms in string.gmatch(lw or '', '%d+') do kept[ms] = true end
  end
  local states = {}
  for i = 1, #limits do
    local limit = limits[i]
    local state = nil
    local from = at[limit.key]
    if from and (same or kept[limit.key]) then
      local seen = false
      if with_seen then seen = stored[from + 2] end
      state = limit_state(stored[from], stored[from + 1], seen, limit.ms, limit.fields)
    end
    if state and state.first >= 0 and state.first <= now - limit.ms then
      -- Debits leave the window: its `seen` is needed now.
      if window_seen(ka, state) then
        advance(kw, state, now - limit.ms)
        state.dirty = true
      else
        state = nil
      end
    end
    if not state then state = limit_build(kw, now - limit.ms, limit.ms, limit.fields) end
    states[i] = state
    kept[limit.key] = nil
  end
  if not same then
    local gone = {}
    for ms in pairs(kept) do
      for _, field in ipairs(limit_field_names(ms)) do gone[#gone + 1] = field end
    end
    if #gone > 0 then redis.call('HDEL', ka, unpack(gone)) end
    if want == '' then redis.call('HDEL', ka, 'lw') else redis.call('HSET', ka, 'lw', want) end
  end
  return states
end

-- The windows the account keeps (for refunds and settlements, which do not
-- know the plan), advanced to now; one whose total is unreadable is
-- dropped from `lw` (the next debit rebuilds it).
local function limits_kept(ka, kw, now)
  local lw = redis.call('HGET', ka, 'lw')
  if not lw or lw == '' then return {} end
  local names, windows, fields = {}, {}, {}
  for ms in string.gmatch(lw, '%d+') do
    names[#names + 1] = ms
    windows[#names] = limit_field_names(ms)
    for _, field in ipairs(windows[#names]) do fields[#fields + 1] = field end
  end
  local values = redis.call('HMGET', ka, unpack(fields))
  local states, keep = {}, {}
  for i, ms in ipairs(names) do
    local state = limit_state(values[3 * i - 2], values[3 * i - 1], values[3 * i], tonumber(ms), windows[i])
    if state then
      advance(kw, state, now - state.ms)
      states[#states + 1] = state
      keep[#keep + 1] = ms
    end
  end
  if #keep < #names then redis.call('HSET', ka, 'lw', table.concat(keep, ',')) end
  return states
end

-- field/value pairs for the extra windows to save: `used` of every window
-- when `used_changed`; `used` and `first` of a window whose `first` or
-- `seen` changed (`dirty`), or of every window when `all`, with `seen`
-- when it was read (a debit that did not read it did not change it).
local function limit_fields(states, used_changed, all)
  local out = {}
  for i = 1, #states do
    local state = states[i]
    if all or state.dirty then
      out[#out + 1] = state.fields[1]
      out[#out + 1] = int(state.used)
      out[#out + 1] = state.fields[2]
      out[#out + 1] = int(state.first)
      if state.seen ~= false then
        out[#out + 1] = state.fields[3]
        out[#out + 1] = int(state.seen)
      end
    elseif used_changed then
      out[#out + 1] = state.fields[1]
      out[#out + 1] = int(state.used)
    end
  end
  return out
end

-- Prepaid grants ---------------------------------------------------------

local function grant_parse(value)
  local credits, remaining, expires, created, voided =
    string.match(value or '', '^(%d+) (%d+) (%-?%d+) (%d+) ([01])$')
  if not credits then return nil end
  return { credits = tonumber(credits), remaining = tonumber(remaining), expires = tonumber(expires),
    created = tonumber(created), voided = voided == '1' }
end

local function grant_value(g)
  local voided = '0'
  if g.voided then voided = '1' end
  return string.format('%d %d %d %d %s', g.credits, g.remaining, g.expires, g.created, voided)
end

-- Whether a grant can be spent from (or given back to) at `now`.
local function grant_live(g, now)
  return not g.voided and (g.expires < 0 or g.expires > now)
end

-- Every grant of the account, in the order debits spend them: soonest
-- expiry first, never-expiring last, then oldest (lowest number) first.
local function grants_all(kg)
  local all = redis.call('HGETALL', kg)
  local list = {}
  for i = 1, #all, 2 do
    local number = tonumber(all[i])
    if number then
      local g = grant_parse(all[i + 1])
      if g then
        g.number = number
        list[#list + 1] = g
      end
    end
  end
  table.sort(list, function(a, b)
    local ea, eb = a.expires, b.expires
    if ea < 0 then ea = math.huge end
    if eb < 0 then eb = math.huge end
    if ea ~= eb then return ea < eb end
    return a.number < b.number
  end)
  return list
end

-- The credits left in live grants and the soonest expiry among those with
-- credits left (-1: none).
local function grants_totals(list, now)
  local sum, soonest = 0, -1
  for _, g in ipairs(list) do
    if grant_live(g, now) and g.remaining > 0 then
      sum = sum + g.remaining
      if g.expires >= 0 and (soonest < 0 or g.expires < soonest) then soonest = g.expires end
    end
  end
  return sum, soonest
end

-- The grants' running totals from the account fields gs, ge, brought to
-- `now`: read again from the grants only when an expiry has passed (or the
-- fields are not valid).
local function grants_state(kg, gs, ge, now)
  local state = { sum = tonumber(gs or '0'), soonest = tonumber(ge or '-1'), changed = false }
  if not whole(state.sum, 0, MAX_CREDITS) or not whole(state.soonest, -1, MAX_EXACT)
    or (state.soonest >= 0 and state.soonest <= now) then
    state.sum, state.soonest = grants_totals(grants_all(kg), now)
    state.changed = true
  end
  return state
end

local function grant_fields(gstate)
  if not gstate.changed then return {} end
  return { 'gs', int(gstate.sum), 'ge', int(gstate.soonest) }
end

-- Takes `need` credits (at most what live grants hold) from the grants in
-- spending order; returns the parts {number, credits, …} in the order taken.
local function grants_take(kg, gstate, need, now)
  local list = grants_all(kg)
  local parts, writes = {}, {}
  for _, g in ipairs(list) do
    if need <= 0 then break end
    if grant_live(g, now) and g.remaining > 0 then
      local take = math.min(need, g.remaining)
      g.remaining = g.remaining - take
      need = need - take
      parts[#parts + 1] = g.number
      parts[#parts + 1] = take
      writes[#writes + 1] = int(g.number)
      writes[#writes + 1] = grant_value(g)
    end
  end
  if #writes > 0 then redis.call('HSET', kg, unpack(writes)) end
  gstate.sum, gstate.soonest = grants_totals(list, now)
  gstate.changed = true
  return parts
end

-- Gives `credits` back to grant `number`, unless it has expired or was
-- voided (then they are gone).
local function grant_give_back(kg, gstate, number, credits, now)
  local g = grant_parse(redis.call('HGET', kg, int(number)))
  if not g or not grant_live(g, now) then return end
  g.remaining = g.remaining + credits
  redis.call('HSET', kg, int(number), grant_value(g))
  gstate.sum = gstate.sum + credits
  if g.expires >= 0 and (gstate.soonest < 0 or g.expires < gstate.soonest) then gstate.soonest = g.expires end
  gstate.changed = true
end

-- Gives back `amount` of a debit's charge, last taken first: grant parts
-- from the last, then the allowance. Returns the new allowance part and
-- grant parts.
local function give_back(kg, gstate, allowance, parts, amount, now)
  local kept = {}
  for i = 1, #parts do kept[i] = parts[i] end
  local i = #kept - 1
  while amount > 0 and i >= 1 do
    local back = math.min(amount, kept[i + 1])
    grant_give_back(kg, gstate, kept[i], back, now)
    kept[i + 1] = kept[i + 1] - back
    amount = amount - back
    i = i - 2
  end
  local shrunk = {}
  for j = 1, #kept, 2 do
    if kept[j + 1] > 0 then
      shrunk[#shrunk + 1] = kept[j]
      shrunk[#shrunk + 1] = kept[j + 1]
    end
  end
  return allowance - math.min(amount, allowance), shrunk
end
