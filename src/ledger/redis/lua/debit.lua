-- Check and record a batch of debits, each one atomically, in order.
-- One call carries the debits that gateway callers queued while the previous
-- call was in flight, so Redis runs one script (one TIME, one reply) for many
-- requests. With Redis Cluster a batch holds a single debit (its keys share
-- one slot).
-- KEYS: per debit, in order: account hash, window zset, id index, usage
--       aggregates, alert queue.
-- ARGV: window_ms, retention_ms, plan count n, n plan name / allowance
--       pairs, then per debit: cost, id (flags byte + id part, see the
--       prelude), fallback id (encoded likewise), the id to index ('' when
--       packed), route,
--       deadline_ms (Redis clock; 0 = none), alert thresholds (millionths
--       of the allowance, comma-separated; '' = none: see the prelude).
-- Returns one string, a line per debit (one bulk string is far cheaper for
-- the client to parse than nested arrays):
--   A <plan number> <used> <next_release_in_ms> <1: under the id | 2: the fallback> <now>
--   R <plan number> <used> <next_release_in_ms> <retry-after ms or -1> <now>
--   N (no account) | S (suspended) | X <now> (past its deadline)
--   U <plan name> (not in the table) | E <message> (a Redis error; the others still run)
--   D <field> (the account's stored totals are damaged: nothing recorded)
-- where the plan number is the plan's position in ARGV's table, from 1.

-- Plan name → its position in ARGV's table (filled below).
local plan_numbers = {}

local function reply(status, plan_number, state, now, window_ms, extra)
  return status .. ' ' .. plan_number .. ' ' .. int(state.used) .. ' '
    .. int(next_release_in(state, now, window_ms)) .. ' ' .. int(extra) .. ' ' .. int(now)
end

local function debit_one(k, cost, id, fallback, text_id, route, deadline, thresholds, now, window_ms, retention_ms, allowances)
  local account = redis.call('HMGET', k.account, 'plan', 'suspended', 'used', 'seen', 'first', 'sweep', 'r:' .. route, 'uw')
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
    if changed then save_state(k.account, state) end
    return reply('A', plan_number, state, now, window_ms, 1)
  end

  -- A cost above the allowance is compared alone first: it may be beyond
  -- MAX_CREDITS, where a sum would no longer be exact.
  if cost > allowance or state.used + cost > allowance then
    if changed then save_state(k.account, state) end
    -- Walk the oldest counting debits until enough would have left for this
    -- cost to fit; only rejected requests pay for this, and only as far as needed.
    local retry = -1
    if cost <= allowance then
      local need = state.used + cost - allowance
      local freed = 0
      local offset = 0
      while retry < 0 do
        local batch = redis.call('ZRANGEBYSCORE', k.window, '(' .. int(now - window_ms), '+inf', 'WITHSCORES', 'LIMIT', offset, 256)
        if #batch == 0 then break end
        for i = 1, #batch, 2 do
          if counts(batch[i]) then
            freed = freed + cost_of(batch[i])
            if freed >= need then
              retry = tonumber(batch[i + 1]) + window_ms - now
              if retry < 1 then retry = 1 end
              break
            end
          end
        end
        offset = offset + 256
      end
    end
    return reply('R', plan_number, state, now, window_ms, retry)
  end

  local route_number = account[7]
  if not route_number then
    route_number = redis.call('HINCRBY', k.account, 'nr', 1)
    redis.call('HSET', k.account, 'r:' .. route, route_number, 'n:' .. route_number, route)
  end
  local tail = varint(cost) .. varint(tonumber(route_number))
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
    if string.byte(fallback, 1) < 2 then
      local _, start = read_varint(fallback, 2)
      redis.call('HSET', k.ids, string.sub(fallback, start), int(now))
    end
  end
  state.used = state.used + cost
  queue_crossed_alerts(k.account, k.alerts, thresholds, state.used - cost, state.used, allowance, now)
  if state.first < 0 then state.first = now end
  count_usage(state, now, tonumber(route_number), cost, 1)
  save_state(k.account, state)
  return reply('A', plan_number, state, now, window_ms, recorded_as)
end

local window_ms = tonumber(ARGV[1])
local retention_ms = tonumber(ARGV[2])
local plan_count = tonumber(ARGV[3])
local allowances = {}
for i = 1, plan_count do
  allowances[ARGV[2 + 2 * i]] = tonumber(ARGV[3 + 2 * i])
  plan_numbers[ARGV[2 + 2 * i]] = i
end
local first_debit_arg = 4 + 2 * plan_count
local now = ledger_now()
local count = #KEYS / 5
local replies = {}
-- One pcall for the whole batch (each costs a setjmp); after an error the
-- debits not yet run carry on in a fresh one.
local done = 0
local function run_from_done()
  for n = done, count - 1 do
    local k = { account = KEYS[5 * n + 1], window = KEYS[5 * n + 2], ids = KEYS[5 * n + 3], usage = KEYS[5 * n + 4],
      alerts = KEYS[5 * n + 5] }
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
