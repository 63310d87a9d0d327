-- The account and its window as of the ledger's clock.
-- KEYS: account hash, window zset, history zset (unused), debits hash, used total.
-- ARGV: window_ms.
-- Returns {} when there is no account, else
-- {plan, suspended, used, now, next_release_at or -1, next_release_credits}.

local account = redis.call('HMGET', KEYS[1], 'plan', 'suspended')
if not account[1] then return {} end
local window_ms = tonumber(ARGV[1])
local now = ledger_now()
local used = trim_window(now, window_ms)
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local release_at = -1
local credits = 0
if #first > 0 then
  local at = first[2]
  release_at = tonumber(at) + window_ms
  local same = redis.call('ZRANGEBYSCORE', KEYS[2], at, at)
  local records = redis.call('HMGET', KEYS[4], unpack(same))
  for i = 1, #same do credits = credits + cost_of(records[i]) end
end
return {account[1], account[2] or '0', used, now, release_at, credits}
