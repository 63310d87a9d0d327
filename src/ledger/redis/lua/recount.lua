-- Recompute an account's running totals (used, seen, first) and its usage
-- aggregates from the debits in its window: the admin repair for an account
-- whose totals are damaged. A scan of the whole window in one atomic step:
-- admin only, never on the request path. A counting debit whose own cost is
-- above MAX_CREDITS cannot be counted exactly; it is voided (marked
-- refunded, kept in the history).
-- The extra windows' totals are dropped (the next debit or balance read
-- builds them from the debits) and the grants' totals recomputed.
-- KEYS: account hash, window zset, usage aggregates, grants.   ARGV: window_ms.
-- Returns {} when there is no account,
-- {'too_large', total} when the debits add up to more than MAX_CREDITS
-- (nothing written), else
-- {'recounted', previous used, used, counted, voided, changed (0/1)}, where
-- the previous used is what the stored totals said as of now (debits that
-- left the window subtracted), or the stored value verbatim when the totals
-- were damaged; changed is 0 when the recount agrees with them.

local account = redis.call('HMGET', KEYS[1], 'plan', 'used', 'seen', 'first')
if not account[1] then return {} end
local window_ms = tonumber(ARGV[1])
local cutoff = ledger_now() - window_ms
local previous = window_state(account[2], account[3], account[4], nil)
local previous_used = account[2] or '0'
if previous then
  advance(KEYS[2], previous, cutoff)
  previous_used = int(previous.used)
end
local used, counted, first = 0, 0, -1
local totals = new_totals()
local void = {}
each_counting(KEYS[2], cutoff, function(m, at)
  local cost, route, allowance = cost_route(m)
  if whole(cost, 0, MAX_CREDITS) and whole(allowance, 0, cost) then
    used = used + allowance
    counted = counted + 1
    if first < 0 then first = at end
    total_add(totals, at, route, cost, window_ms, allowance)
  else
    void[#void + 1] = m
    void[#void + 1] = at
  end
end)
if used > MAX_CREDITS then return {'too_large', int(used)} end
for i = 1, #void, 2 do
  redis.call('ZREM', KEYS[2], void[i])
  redis.call('ZADD', KEYS[2], void[i + 1], string.char(string.byte(void[i], 1) + 1) .. string.sub(void[i], 2))
end
local lw = redis.call('HGET', KEYS[1], 'lw')
if lw then
  local gone = { 'lw' }
  for ms in string.gmatch(lw, '%d+') do
    for _, field in ipairs(limit_field_names(ms)) do gone[#gone + 1] = field end
  end
  redis.call('HDEL', KEYS[1], unpack(gone))
end
local grants, soonest = grants_totals(grants_all(KEYS[4]), cutoff + window_ms)
local state = { used = used, seen = cutoff, first = first }
save_state(KEYS[1], state, { 'gs', int(grants), 'ge', int(soonest) })
usage_write(KEYS[1], KEYS[3], totals, window_ms)
local changed = 1
if previous and previous.used == used and previous.first == first and #void == 0 then changed = 0 end
return {'recounted', previous_used, used, counted, #void / 2, changed}
