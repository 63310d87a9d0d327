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

-- Subtracts the costs of the debits that left the window since `seen`
-- (at <= cutoff); returns the new used and seen. Work is proportional to
-- what left, never to the window's size.
local function expire(kw, used, seen, cutoff)
  if cutoff <= seen then return used, seen end
  local offset = 0
  while true do
    local left = redis.call('ZRANGEBYSCORE', kw, '(' .. int(seen), int(cutoff), 'LIMIT', offset, 512)
    for i = 1, #left do
      if counts(left[i]) then used = used - cost_of(left[i]) end
    end
    if #left < 512 then break end
    offset = offset + 512
  end
  if used < 0 then used = 0 end
  return used, cutoff
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

-- The window's bookkeeping from the account hash fields used, seen, first;
-- or nil and the name of the first field that holds no valid value (an
-- older build, or a hand edit, may have written one). Nothing is computed
-- from such a state: the callers report it, and the admin recount repairs it.
local function window_state(used, seen, first)
  local state = { used = tonumber(used or '0'), seen = tonumber(seen or '0'), first = tonumber(first or '-1') }
  if not whole(state.used, 0, MAX_CREDITS) then return nil, 'used' end
  if not whole(state.seen, 0, MAX_EXACT) then return nil, 'seen' end
  if not whole(state.first, -1, MAX_EXACT) then return nil, 'first' end
  return state
end

-- Brings the window to `cutoff` (= now - window). Nothing is read while the
-- oldest counting debit is still inside, which is almost every call: a debit
-- then costs no range query at all. Returns true when the state changed.
local function advance(kw, state, cutoff)
  if state.first < 0 or state.first > cutoff then return false end
  state.used, state.seen = expire(kw, state.used, state.seen, cutoff)
  state.first = oldest_counting(kw, cutoff) or -1
  return true
end

-- Every field of the state back into the account hash.
local function save_state(ka, state)
  redis.call('HSET', ka, 'used', int(state.used), 'seen', int(state.seen), 'first', int(state.first))
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
-- looked for at `at` when known (the gateway's own refunds and settlements),
-- else through the index of text ids, else — a packed id without its time,
-- admin refunds only — by a scan of the account's history.
local function find_debit(kw, ki, packed, text, request_id, at)
  local function same(m)
    local want = text
    if string.byte(m, 1) >= 2 then want = packed end
    -- Text ids carry their length, so a prefix match is the whole id.
    return want ~= '' and string.sub(m, 2, #want) == string.sub(want, 2)
  end
  local function recorded_at(t)
    local here = redis.call('ZRANGEBYSCORE', kw, int(t), int(t))
    for i = 1, #here do
      if same(here[i]) then return here[i], t end
    end
    return nil
  end
  if at then return recorded_at(at) end
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
