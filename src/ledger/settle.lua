-- Replace a reservation by the settled cost, atomically.
-- KEYS: window zset, debits hash, used total.   ARGV: debit id, final cost.
-- Returns {'settled', used} , {'refunded'} or {'unknown'}.

local record = redis.call('HGET', KEYS[2], ARGV[1])
if not record then return {'unknown'} end
local cost, at, refunded, route = string.match(record, '^(%d+)|(%d+)|(%d)|(.*)$')
if refunded == '1' then return {'refunded'} end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|' .. at .. '|0|' .. route)
local used = tonumber(redis.call('GET', KEYS[3]) or '0')
-- A debit that already left the window no longer counts either way.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  used = used - tonumber(cost) + tonumber(ARGV[2])
  if used < 0 then used = 0 end
  redis.call('SET', KEYS[3], string.format('%.0f', used))
end
return {'settled', used}
