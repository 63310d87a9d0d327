-- Remove one debit from the window; the history keeps it, marked refunded.
-- KEYS: account hash, window zset, id index.
-- ARGV: window_ms, id (flags byte + id part), text id ('' when packed),
--       at_ms ('' when unknown: the admin plane refunds by id alone).
-- Returns 'refunded', 'already' or 'unknown'.

local member, at = find_debit(KEYS[2], KEYS[3], ARGV[2], ARGV[3], tonumber(ARGV[4]))
if not member then return 'unknown' end
local flags, id, cost, route = parse(member)
if flags % 2 == 1 then return 'already' end
redis.call('ZREM', KEYS[2], member)
redis.call('ZADD', KEYS[2], at, string.char(flags + 1) .. id .. varint(cost) .. varint(route))
-- Only a debit not yet subtracted by `expire` holds credits in `used`.
local now = ledger_now()
local account = redis.call('HMGET', KEYS[1], 'used', 'seen')
local used, seen = expire(KEYS[2], tonumber(account[1] or '0'), tonumber(account[2] or '0'), now - tonumber(ARGV[1]))
if at > seen then used = math.max(used - cost, 0) end
redis.call('HSET', KEYS[1], 'used', int(used), 'seen', int(seen))
return 'refunded'
