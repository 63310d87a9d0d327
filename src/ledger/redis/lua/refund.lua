-- Remove one debit from the window; the history keeps it, marked refunded.
-- KEYS: account hash, window zset, id index, usage aggregates.
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
local flags, id, cost, route = parse(member)
if flags % 2 == 1 then return 'already' end
local window_ms = tonumber(ARGV[1])
local cutoff = ledger_now() - window_ms
local account = redis.call('HMGET', KEYS[1], 'used', 'seen', 'uw')
local state = window_state(account[1], account[2], nil, usage_keeper(KEYS[4], account[3], window_ms))
-- Debits that left the window are subtracted while this one still counts
-- there, so a debit that left before its refund is subtracted exactly once.
if state then expire(KEYS[2], state, cutoff) end
redis.call('ZREM', KEYS[2], member)
redis.call('ZADD', KEYS[2], at, string.char(flags + 1) .. id .. varint(cost) .. varint(route))
if not state then return 'refunded' end
-- Only a debit still in the window holds credits in `used`.
if at > state.seen then
  state.used = math.max(state.used - cost, 0)
  count_usage(state, at, route, -cost, -1)
end
-- It may have been the oldest counting debit.
state.first = oldest_counting(KEYS[2], cutoff) or -1
save_state(KEYS[1], state)
return 'refunded'
