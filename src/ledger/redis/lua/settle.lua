-- Replace a reservation by the settled cost, atomically. The settled cost
-- may take `used` above the allowance (the upstream did the work); it may
-- not take it above MAX_CREDITS: then nothing is written.
-- KEYS: account hash, window zset, id index, usage aggregates, alert queue.
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
local flags, id, cost, route = parse(member)
if flags % 2 == 1 then return {'refunded'} end
local final = tonumber(ARGV[6])
local window_ms = tonumber(ARGV[1])
local cutoff = ledger_now() - window_ms
local account = redis.call('HMGET', KEYS[1], 'used', 'seen', 'uw', 'plan')
local state, damaged = window_state(account[1], account[2], nil, usage_keeper(KEYS[4], account[3], window_ms))
if not state then return {'damaged', damaged} end
expire(KEYS[2], state, cutoff)
-- A debit that already left the window no longer counts either way.
local queued = 0
if at > state.seen then
  local used = state.used - cost + final
  if used > MAX_CREDITS then return {'too_large', int(used)} end
  local before = state.used
  state.used = math.max(used, 0)
  local thresholds = ARGV[7] or ''
  if thresholds ~= '' and account[4] then
    for i = 1, tonumber(ARGV[8]) do
      if ARGV[7 + 2 * i] == account[4] then
        queued = queue_crossed_alerts(KEYS[1], KEYS[5], thresholds, before, state.used, tonumber(ARGV[8 + 2 * i]), ledger_now())
      end
    end
  end
  count_usage(state, at, route, final - cost, 0)
end
redis.call('ZREM', KEYS[2], member)
redis.call('ZADD', KEYS[2], at, string.char(flags) .. id .. varint(final) .. varint(route))
state.first = oldest_counting(KEYS[2], cutoff) or -1
save_state(KEYS[1], state)
return {'settled', state.used, queued}
