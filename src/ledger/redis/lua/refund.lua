-- Remove one debit from the window; the history keeps it, marked refunded.
-- Each part goes back where it came from: the allowance part leaves the
-- 30-day window, grant parts return to their grants (last taken first;
-- nothing to a grant that has expired or was voided), and the cost leaves
-- every extra window it still counts in.
-- KEYS: account hash, window zset, id index, usage aggregates, grants.
-- ARGV: window_ms, the id packed ('' when it cannot be) and as text (see
--       find_debit), the id itself, at_ms ('' when unknown; '<from>:<deadline>'
--       for a debit whose call failed: looked for in that range, and only
--       once the Redis clock has passed the debit's deadline).
-- Returns 'refunded', 'already', 'unknown' or 'early' (deadline not passed).
-- On an account whose stored totals are damaged the debit is still marked
-- refunded, and the totals are left to the admin recount, which counts only
-- debits not refunded.

local from, till = string.match(ARGV[5], '^(%-?%d+):(%-?%d+)$')
if till and ledger_now() <= tonumber(till) then return 'early' end
local member, at = find_debit(KEYS[2], KEYS[3], ARGV[2], ARGV[3], ARGV[4], tonumber(from or ARGV[5]), tonumber(till))
if not member then return 'unknown' end
local flags, _, cost, route, rest = parse(member)
if flags % 2 == 1 then return 'already' end
local allowance, parts = split_of(member, flags, cost, rest)
local window_ms = tonumber(ARGV[1])
local now = ledger_now()
local cutoff = now - window_ms
local account = redis.call('HMGET', KEYS[1], 'used', 'seen', 'uw', 'gs', 'ge')
local state = window_state(account[1], account[2], nil, usage_keeper(KEYS[4], account[3], window_ms))
-- Debits that left the window are subtracted while this one still counts
-- there, so a debit that left before its refund is subtracted exactly once.
if state then expire(KEYS[2], state, cutoff) end
local limits = limits_kept(KEYS[1], KEYS[2], now)
redis.call('ZREM', KEYS[2], member)
redis.call('ZADD', KEYS[2], at, string.char(flags + 1) .. string.sub(member, 2))
local gstate = grants_state(KEYS[5], account[4], account[5], now)
if #parts > 0 then give_back(KEYS[5], gstate, allowance, parts, cost, now) end
for _, limit in ipairs(limits) do
  if at > limit.seen then limit.used = math.max(limit.used - cost, 0) end
  if limit.first == at then limit.first = oldest_counting(KEYS[2], now - limit.ms) or -1 end
end
local more = limit_fields(limits, true, true)
for _, v in ipairs(grant_fields(gstate)) do more[#more + 1] = v end
if not state then
  if #more > 0 then redis.call('HSET', KEYS[1], unpack(more)) end
  return 'refunded'
end
-- Only a debit still in the window holds credits in `used`.
if at > state.seen then
  state.used = math.max(state.used - allowance, 0)
  count_usage(state, at, route, -cost, -1, allowance - cost)
end
-- It may have been the oldest counting debit.
state.first = oldest_counting(KEYS[2], cutoff) or -1
save_state(KEYS[1], state, more)
return 'refunded'
