-- The account and its window as of the ledger's clock.
-- KEYS: account hash, window zset, usage aggregates.   ARGV: window_ms.
-- Returns {} when there is no account, {'damaged', field} when its stored
-- totals cannot be trusted, else
-- {plan, suspended, used, now, next_release_at or -1, next_release_credits}.

local account = redis.call('HMGET', KEYS[1], 'plan', 'suspended', 'used', 'seen', 'first', 'uw')
if not account[1] then return {} end
local window_ms = tonumber(ARGV[1])
local now = ledger_now()
local state, damaged = window_state(account[3], account[4], account[5], usage_keeper(KEYS[3], account[6], window_ms))
if not state then return {'damaged', damaged} end
if advance(KEYS[2], state, now - window_ms) then save_state(KEYS[1], state) end
local release_at, credits = -1, 0
if state.first >= 0 then
  release_at = state.first + window_ms
  local same = redis.call('ZRANGEBYSCORE', KEYS[2], state.first, state.first)
  for i = 1, #same do
    if counts(same[i]) then credits = credits + cost_of(same[i]) end
  end
end
return {account[1], account[2] or '0', state.used, now, release_at, credits}
