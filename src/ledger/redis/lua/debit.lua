-- Check and record a batch of debits, each one atomically, in order.
-- One call carries the debits that gateway callers queued while the previous
-- call was in flight, so Redis runs one script (one TIME, one reply) for many
-- requests. With Redis Cluster a batch holds a single debit (its keys share
-- one slot).
-- KEYS: per debit, in order: account hash, window zset, id index, usage
--       aggregates, grants, alert queue.
-- ARGV: window_ms, retention_ms, plan count n, n plan name / allowance /
--       extra windows ("<ms>:<credits>,…" or '') triples, then per debit:
--       cost, id (flags byte + id part, see the
--       prelude), fallback id (encoded likewise), the id to index ('' when
--       packed), route,
--       deadline_ms (Redis clock; 0 = none), alert thresholds (millionths
--       of the allowance, comma-separated; '' = none: see the prelude).
-- Returns one string, a line per debit (one bulk string is far cheaper for
-- the client to parse than nested arrays):
--   A <plan number> <used> <next_release_in_ms> <1: under the id | 2: the fallback> <now>
--     <grants left> <paid from grants> then <used> <next_release_in_ms> per extra window
--   R <plan number> <used> <next_release_in_ms> <retry-after ms or -1> <now>
--     <grants left> <the window that refused: 0 the 30-day one, i the plan's
--     i-th extra window> then <used> <next_release_in_ms> per extra window
--   N (no account) | S (suspended) | X <now> (past its deadline)
--   U <plan name> (not in the table) | E <message> (a Redis error; the others still run)
--   D <field> (the account's stored totals are damaged: nothing recorded)
-- where the plan number is the plan's position in ARGV's table, from 1.

-- Plan name → its position in ARGV's table, and its extra windows (filled below).
local plan_numbers = {}
local plan_limits = {}
local plan_keys = {}
-- The account hash fields read for every window length any plan has, and
-- where each length's `l:` value is in the HMGET reply ('<ms>' → position).
local limit_fields_read = {}
local limit_at = {}
-- (debit_one reads 11 fields before them)
local ACCOUNT_FIELDS = 11

-- The reply line, formatted in one call (per-number formatting and
-- concatenation cost several times more); the format for n extra windows
-- is built once per call.
local reply_formats = {}
local function reply(status, plan_number, state, now, window_ms, extra, gstate, extra2, limits)
  local release = next_release_in(state, now, window_ms)
  local n = #limits
  if n == 0 then
    return string.format('%s %d %d %d %d %d %d %d', status, plan_number, state.used, release, extra, now,
      gstate.sum, extra2)
  end
  local format = reply_formats[n]
  if not format then
    format = '%s %d %d %d %d %d %d %d' .. string.rep(' %d %d', n)
    reply_formats[n] = format
  end
  local values = { status, plan_number, state.used, release, extra, now, gstate.sum, extra2 }
  for i = 1, n do
    values[#values + 1] = limits[i].used
    values[#values + 1] = next_release_in(limits[i], now, limits[i].ms)
  end
  return string.format(format, unpack(values))
end

-- Milliseconds until enough of the window's debits (weighed by `weigh`)
-- have left for `need` credits to come back; -1 when none would.
local function retry_in(kw, cutoff, window_ms, need, now, weigh)
  local freed = 0
  local offset = 0
  while true do
    local batch = redis.call('ZRANGEBYSCORE', kw, '(' .. int(cutoff), '+inf', 'WITHSCORES', 'LIMIT', offset, 256)
    if #batch == 0 then return -1 end
    for i = 1, #batch, 2 do
      if counts(batch[i]) then
        freed = freed + weigh(batch[i])
        if freed >= need then
          local retry = tonumber(batch[i + 1]) + window_ms - now
          if retry < 1 then retry = 1 end
          return retry
        end
      end
    end
    offset = offset + 256
  end
end

local function debit_one(k, cost, id, fallback, text_id, route, deadline, thresholds, now, window_ms, retention_ms, allowances)
  local account = redis.call('HMGET', k.account, 'plan', 'suspended', 'used', 'seen', 'first', 'sweep', 'r:' .. route, 'uw',
    'lw', 'gs', 'ge', unpack(limit_fields_read))
  if not account[1] then return 'N' end
  if account[2] == '1' then return 'S' end
  local plan = account[1]
  local allowance = allowances[plan]
  if not allowance then return 'U ' .. plan end
  local plan_number = plan_numbers[plan]
  -- A call that waited too long (a frozen or overloaded Redis) may already
  -- be abandoned by the gateway, which answered 503: it must not debit.
  if deadline > 0 and now > deadline then return 'X ' .. int(now) end

  local state, damaged = window_state(account[3], account[4], account[5],
    usage_keeper(k.usage, account[8], window_ms))
  if not state then return 'D ' .. damaged end
  local changed = advance(k.window, state, now - window_ms)
  local limits = limits_sync(k.account, k.window, plan_limits[plan], account[9], account, limit_at, false, now,
    plan_keys[plan])
  local gstate = grants_state(k.grants, account[10], account[11], now)
  -- Aggregates not kept yet (an account from before them, or a new window)
  -- start when nothing counts: then empty aggregates are exact.
  if not state.usage and state.first < 0 and state.used == 0 then
    state.usage = usage_write(k.account, k.usage, new_totals(), window_ms)
  end
  -- History past its retention goes now and then, a bounded batch at a time.
  -- (A sweep time that is not a number is taken as due, and rewritten.)
  if now >= (tonumber(account[6] or '0') or 0) then
    local more = sweep(k.window, k.ids, now - retention_ms)
    local next_sweep = now + math.min(60000, math.floor(retention_ms / 16))
    if more then next_sweep = now end
    redis.call('HSET', k.account, 'sweep', int(next_sweep))
  end

  if cost == 0 then
    local more = limit_fields(limits, false, false)
    if gstate.changed then
      for _, v in ipairs(grant_fields(gstate)) do more[#more + 1] = v end
    end
    if changed or #more > 0 then save_state(k.account, state, more) end
    return reply('A', plan_number, state, now, window_ms, 1, gstate, 0, limits)
  end

  -- What the allowance still holds (a settlement may have taken `used`
  -- past it), and whether every window admits the cost. A cost beyond
  -- MAX_CREDITS is refused alone first: sums with it would not be exact.
  local from_allowance = math.max(allowance - state.used, 0)
  local refused = nil
  if cost > MAX_CREDITS or cost > from_allowance + gstate.sum then refused = 0 end
  for i, limit in ipairs(limits) do
    if cost > plan_limits[plan][i].credits - limit.used then refused = refused or i end
  end
  if refused then
    local more = limit_fields(limits, false, false)
    if gstate.changed then
      for _, v in ipairs(grant_fields(gstate)) do more[#more + 1] = v end
    end
    if changed or #more > 0 then save_state(k.account, state, more) end
    -- Per refusing window: walk its oldest counting debits until enough
    -- would have left for this cost to fit (only refused requests pay for
    -- this, and only as far as needed). The request fits once every window
    -- does: the latest of these times, and none when one never will.
    local retry, binding = 0, 0
    local function consider(window, r)
      if retry < 0 then return end
      if r < 0 then retry, binding = -1, window
      elseif r > retry then retry, binding = r, window end
    end
    if cost > MAX_CREDITS or cost > from_allowance + gstate.sum then
      if cost > allowance + gstate.sum then consider(0, -1)
      else
        consider(0, retry_in(k.window, now - window_ms, window_ms,
          state.used + cost - allowance - gstate.sum, now, allowance_of))
      end
    end
    for i, limit in ipairs(limits) do
      local credits = plan_limits[plan][i].credits
      if cost > credits - limit.used then
        if cost > credits then consider(i, -1)
        else
          consider(i, retry_in(k.window, now - limit.ms, limit.ms, limit.used + cost - credits, now, cost_of))
        end
      end
    end
    if retry == 0 then retry, binding = -1, refused end
    return reply('R', plan_number, state, now, window_ms, retry, gstate, binding, limits)
  end

  local route_number = account[7]
  if not route_number then
    route_number = redis.call('HINCRBY', k.account, 'nr', 1)
    redis.call('HSET', k.account, 'r:' .. route, route_number, 'n:' .. route_number, route)
  end
  -- The allowance first, the rest from grants (soonest expiry first).
  if from_allowance > cost then from_allowance = cost end
  local parts = {}
  if from_allowance < cost then parts = grants_take(k.grants, gstate, cost - from_allowance, now) end
  local tail, split = tail_of(cost, tonumber(route_number), from_allowance, parts)
  if split > 0 then
    id = string.char(string.byte(id, 1) + split) .. string.sub(id, 2)
    fallback = string.char(string.byte(fallback, 1) + split) .. string.sub(fallback, 2)
  end
  -- A client that reuses a request id must not overwrite an earlier debit:
  -- the debit goes under the fallback id instead.
  local recorded_as = 1
  if text_id ~= '' and redis.call('HSETNX', k.ids, text_id, int(now)) == 0 then
    recorded_as = 2
  end
  if recorded_as == 1 and redis.call('ZADD', k.window, 'NX', now, id .. tail) == 0 then
    recorded_as = 2
  end
  if recorded_as == 2 then
    if redis.call('ZADD', k.window, 'NX', now, fallback .. tail) == 0 then
      return 'E the debit id and its fallback are both taken'
    end
    -- A fallback in text form (not one of the gateway's ids) is found by
    -- its index entry like any client id.
    if string.byte(fallback, 1) % 4 < 2 then
      local _, start = read_varint(fallback, 2)
      redis.call('HSET', k.ids, string.sub(fallback, start), int(now))
    end
  end
  state.used = state.used + from_allowance
  queue_crossed_alerts(k.account, k.alerts, thresholds, state.used - from_allowance, state.used, allowance, now)
  if state.first < 0 then state.first = now end
  count_usage(state, now, tonumber(route_number), cost, 1, cost - from_allowance)
  for i = 1, #limits do
    local limit = limits[i]
    limit.used = limit.used + cost
    if limit.first < 0 then
      limit.first = now
      limit.dirty = true
    end
  end
  local more = limit_fields(limits, true, false)
  if gstate.changed then
    for _, v in ipairs(grant_fields(gstate)) do more[#more + 1] = v end
  end
  save_state(k.account, state, more)
  return reply('A', plan_number, state, now, window_ms, recorded_as, gstate, cost - from_allowance, limits)
end

local window_ms = tonumber(ARGV[1])
local retention_ms = tonumber(ARGV[2])
local plan_count = tonumber(ARGV[3])
local allowances = {}
for i = 1, plan_count do
  local name = ARGV[1 + 3 * i]
  allowances[name] = tonumber(ARGV[2 + 3 * i])
  plan_numbers[name] = i
  plan_limits[name] = parse_limits(ARGV[3 + 3 * i])
  plan_keys[name] = limits_key(plan_limits[name])
  for _, limit in ipairs(plan_limits[name]) do
    if not limit_at[limit.key] then
      limit_at[limit.key] = ACCOUNT_FIELDS + #limit_fields_read + 1
      -- `l:` and `lf:` (the debit reads `ls:` only when debits leave).
      limit_fields_read[#limit_fields_read + 1] = limit.fields[1]
      limit_fields_read[#limit_fields_read + 1] = limit.fields[2]
    end
  end
end
local first_debit_arg = 4 + 3 * plan_count
local now = ledger_now()
-- A call whose keys or arguments do not come in whole debits is refused
-- before anything runs (the loop below would never end on a fraction).
if #KEYS % 6 ~= 0 or #ARGV - first_debit_arg + 1 ~= 7 * (#KEYS / 6) then
  return redis.error_reply('debit.lua: ' .. #KEYS .. ' keys and ' .. #ARGV .. ' arguments are not whole debits')
end
local count = #KEYS / 6
local replies = {}
-- One pcall for the whole batch (each costs a setjmp); after an error the
-- debits not yet run carry on in a fresh one.
local done = 0
local function run_from_done()
  for n = done, count - 1 do
    local k = { account = KEYS[6 * n + 1], window = KEYS[6 * n + 2], ids = KEYS[6 * n + 3], usage = KEYS[6 * n + 4],
      grants = KEYS[6 * n + 5], alerts = KEYS[6 * n + 6] }
    local a = first_debit_arg + 7 * n
    replies[n + 1] = debit_one(k, tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3],
      ARGV[a + 4], tonumber(ARGV[a + 5]), ARGV[a + 6], now, window_ms, retention_ms, allowances)
    done = n + 1
  end
end
while done < count do
  local ok, error = pcall(run_from_done)
  if not ok then
    -- redis.call raises a table {err = ...}; Lua's own errors are strings.
    if type(error) == 'table' then error = error.err or 'script error' end
    done = done + 1
    replies[done] = 'E ' .. string.gsub(tostring(error), '\n', ' ')
  end
end
return table.concat(replies, '\n')
