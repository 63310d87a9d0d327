-- The account and its windows as of the ledger's clock.
-- KEYS: account hash, window zset, usage aggregates, grants.
-- ARGV: window_ms, plan count n, n plan name / extra windows
--       ("<ms>:<credits>,…" or '') pairs. A plan not among them keeps the
--       windows the account has.
-- Returns {} when there is no account, {'damaged', field} when its stored
-- totals cannot be trusted, else
-- {plan, suspended, used, now, next_release_at or -1, next_release_credits,
--  grants left, {ms, used, next_release_at or -1, …} per extra window,
--  {grant number, remaining, expires or -1, …} per live grant with credits}.
-- next_release_credits are the allowance credits coming back then.

local account = redis.call('HMGET', KEYS[1], 'plan', 'suspended', 'used', 'seen', 'first', 'uw', 'lw', 'gs', 'ge')
if not account[1] then return {} end
local window_ms = tonumber(ARGV[1])
local now = ledger_now()
local state, damaged = window_state(account[3], account[4], account[5], usage_keeper(KEYS[3], account[6], window_ms))
if not state then return {'damaged', damaged} end
local changed = advance(KEYS[2], state, now - window_ms)
local limits = {}
local spec = nil
for i = 1, tonumber(ARGV[2]) do
  if ARGV[1 + 2 * i] == account[1] then spec = ARGV[2 + 2 * i] end
end
if spec then
  local wanted = parse_limits(spec)
  local stored, at = {}, {}
  if #wanted > 0 then
    local fields = {}
    for _, limit in ipairs(wanted) do
      at[limit.key] = #fields + 1
      for _, field in ipairs(limit.fields) do fields[#fields + 1] = field end
    end
    stored = redis.call('HMGET', KEYS[1], unpack(fields))
  end
  limits = limits_sync(KEYS[1], KEYS[2], wanted, account[7], stored, at, true, now)
end
local gstate = grants_state(KEYS[4], account[8], account[9], now)
local more = limit_fields(limits, false, false)
for _, v in ipairs(grant_fields(gstate)) do more[#more + 1] = v end
if changed or #more > 0 then save_state(KEYS[1], state, more) end
local release_at, credits = -1, 0
if state.first >= 0 then
  release_at = state.first + window_ms
  local same = redis.call('ZRANGEBYSCORE', KEYS[2], state.first, state.first)
  for i = 1, #same do
    if counts(same[i]) then credits = credits + allowance_of(same[i]) end
  end
end
local windows = {}
for _, limit in ipairs(limits) do
  local at = -1
  if limit.first >= 0 then at = limit.first + limit.ms end
  windows[#windows + 1] = limit.ms
  windows[#windows + 1] = limit.used
  windows[#windows + 1] = at
end
local grants = {}
if gstate.sum > 0 then
  for _, g in ipairs(grants_all(KEYS[4])) do
    if grant_live(g, now) and g.remaining > 0 then
      grants[#grants + 1] = g.number
      grants[#grants + 1] = g.remaining
      grants[#grants + 1] = g.expires
    end
  end
end
return {account[1], account[2] or '0', state.used, now, release_at, credits, gstate.sum, windows, grants}
