-- Remove one debit from the window; the history keeps it, marked refunded.
-- KEYS: window zset, debits hash, used total.   ARGV: debit id.
-- Returns 'refunded', 'already' or 'unknown'.

local record = redis.call('HGET', KEYS[2], ARGV[1])
if not record then return 'unknown' end
local cost, at, refunded, route = string.match(record, '^(%d+)|(%d+)|(%d)|(.*)$')
if refunded == '1' then return 'already' end
redis.call('HSET', KEYS[2], ARGV[1], cost .. '|' .. at .. '|1|' .. route)
-- Only a debit still in the window holds credits; the running total is the
-- sum of the window's costs, so both move together.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  local used = tonumber(redis.call('GET', KEYS[3]) or '0') - tonumber(cost)
  if used < 0 then used = 0 end
  redis.call('SET', KEYS[3], string.format('%.0f', used))
end
return 'refunded'
