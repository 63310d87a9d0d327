-- Replace a reservation by the settled cost, atomically. The settled cost
-- may take `used` above the allowance (the upstream did the work); it may
-- not take it above MAX_CREDITS: then nothing is written. A settlement below
-- the reservation gives the difference back last taken first (grant parts
-- from the last, then the allowance; nothing to a grant that has expired or
-- was voided); one above it is charged to the allowance part.
-- KEYS: account hash, window zset, id index, usage aggregates, grants, alert
--       queue.
-- ARGV: window_ms, the id packed ('' when it cannot be) and as text (see
--       find_debit), the id itself, at_ms ('' when unknown), final cost
--       (at most MAX_CREDITS: the gateway checks before calling), alert
--       thresholds ('' = none), plan count n, n plan name / allowance pairs.
-- A settlement above the reservation that takes `used` across a threshold
-- queues its alerts like a debit (queue_crossed_alerts in the prelude).
-- Returns {'settled', used, alerts queued}, {'refunded'}, {'unknown'},
-- {'damaged', field} (the account's totals cannot be trusted; nothing written)
-- or {'too_large', total} (the new total would be above MAX_CREDITS; nothing written).

local member, at = find_debit(KEYS[2], KEYS[3], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]))
if not member then return {'unknown'} end
local flags, id, cost, route, rest = parse(member)
if flags % 2 == 1 then return {'refunded'} end
local allowance, parts = split_of(member, flags, cost, rest)
local final = tonumber(ARGV[6])
local window_ms = tonumber(ARGV[1])
local now = ledger_now()
local cutoff = now - window_ms
local account = redis.call('HMGET', KEYS[1], 'used', 'seen', 'uw', 'gs', 'ge', 'plan')
local state, damaged = window_state(account[1], account[2], nil, usage_keeper(KEYS[4], account[3], window_ms))
if not state then return {'damaged', damaged} end
expire(KEYS[2], state, cutoff)
local new_allowance, new_parts = allowance + math.max(final - cost, 0), parts
-- A debit that already left the window no longer counts either way.
if at > state.seen and final > cost then
  local used = state.used - allowance + new_allowance
  if used > MAX_CREDITS then return {'too_large', int(used)} end
end
local limits = limits_kept(KEYS[1], KEYS[2], now)
local gstate = grants_state(KEYS[5], account[4], account[5], now)
if final < cost then
  new_allowance, new_parts = give_back(KEYS[5], gstate, allowance, parts, cost - final, now)
end
local queued = 0
if at > state.seen then
  local before = state.used
  state.used = math.max(state.used - allowance + new_allowance, 0)
  count_usage(state, at, route, final - cost, 0, (final - new_allowance) - (cost - allowance))
  local thresholds = ARGV[7] or ''
  if thresholds ~= '' and account[6] then
    for i = 1, tonumber(ARGV[8]) do
      if ARGV[7 + 2 * i] == account[6] then
        queued = queue_crossed_alerts(KEYS[1], KEYS[6], thresholds, before, state.used, tonumber(ARGV[8 + 2 * i]), now)
      end
    end
  end
end
for _, limit in ipairs(limits) do
  if at > limit.seen then limit.used = math.max(limit.used - cost + final, 0) end
end
local tail, split = tail_of(final, route, new_allowance, new_parts)
redis.call('ZREM', KEYS[2], member)
redis.call('ZADD', KEYS[2], at, string.char(flags % 4 + split) .. id .. tail)
state.first = oldest_counting(KEYS[2], cutoff) or -1
local more = limit_fields(limits, true, true)
for _, v in ipairs(grant_fields(gstate)) do more[#more + 1] = v end
save_state(KEYS[1], state, more)
return {'settled', state.used, queued}
