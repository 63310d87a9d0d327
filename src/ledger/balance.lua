-- The account and its window as of the ledger's clock.
-- KEYS: account hash, window zset.   ARGV: window_ms.
-- Returns {} when there is no account, else
-- {plan, suspended, used, now, next_release_at or -1, next_release_credits}.

local account = redis.call('HMGET', KEYS[1], 'plan', 'suspended', 'used', 'seen')
if not account[1] then return {} end
local window_ms = tonumber(ARGV[1])
local now = ledger_now()
local stored_used, stored_seen = tonumber(account[3] or '0'), tonumber(account[4] or '0')
local used, seen = expire(KEYS[2], stored_used, stored_seen, now - window_ms)
if used ~= stored_used or seen ~= stored_seen then
  redis.call('HSET', KEYS[1], 'used', int(used), 'seen', int(seen))
end
local at, credits = oldest_counting(KEYS[2], seen, true)
local release_at = -1
if at then release_at = at + window_ms else credits = 0 end
return {account[1], account[2] or '0', used, now, release_at, credits}
