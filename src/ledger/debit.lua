-- Check and record one debit atomically.
-- KEYS: account hash, window zset, history zset, debits hash, used total.
-- ARGV: cost, window_ms, retention_ms, request_id, fallback_id, route,
--       deadline_ms (Redis clock; 0 = none),
--       then plan name / allowance pairs.
-- Returns {status, plan, allowance, used, next_release_in_ms, extra, now}
-- where extra is the debit id (admitted) or retry-after ms / -1 (rejected).

local account = redis.call('HMGET', KEYS[1], 'plan', 'suspended')
if not account[1] then return {'no_account'} end
if account[2] == '1' then return {'suspended'} end
local plan = account[1]
local allowance = nil
for i = 8, #ARGV, 2 do
  if ARGV[i] == plan then allowance = tonumber(ARGV[i + 1]) break end
end
if not allowance then return {'unknown_plan', plan} end

local cost = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])
local retention_ms = tonumber(ARGV[3])
local now = ledger_now()
-- A call that waited too long (a frozen or overloaded Redis) may already be
-- abandoned by the gateway, which answered 503: it must not debit.
local deadline = tonumber(ARGV[7])
if deadline > 0 and now > deadline then return {'expired', now} end
local used = trim_window(now, window_ms)

-- History past its retention goes a bounded batch at a time.
local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - retention_ms, 'LIMIT', 0, 128)
if #old > 0 then
  redis.call('HDEL', KEYS[4], unpack(old))
  redis.call('ZREM', KEYS[3], unpack(old))
end

if cost == 0 then
  return {'admitted', plan, allowance, used, next_release_in(now, window_ms), ARGV[4], now}
end

if used + cost > allowance then
  -- Walk the oldest debits until enough would have left for this cost to
  -- fit; only rejected requests pay for this, and only as far as needed.
  local retry = -1
  if cost <= allowance then
    local need = used + cost - allowance
    local freed = 0
    local offset = 0
    while retry < 0 do
      local batch = redis.call('ZRANGE', KEYS[2], offset, offset + 255, 'WITHSCORES')
      if #batch == 0 then break end
      local ids = {}
      for i = 1, #batch, 2 do ids[#ids + 1] = batch[i] end
      local records = redis.call('HMGET', KEYS[4], unpack(ids))
      for j = 1, #ids do
        freed = freed + cost_of(records[j])
        if freed >= need then
          retry = tonumber(batch[2 * j]) + window_ms - now
          if retry < 1 then retry = 1 end
          break
        end
      end
      offset = offset + 256
    end
  end
  return {'rejected', plan, allowance, used, next_release_in(now, window_ms), retry, now}
end

-- A client that reuses a request id must not overwrite an earlier debit.
local id = ARGV[4]
if redis.call('HEXISTS', KEYS[4], id) == 1 then id = ARGV[5] end
redis.call('ZADD', KEYS[2], now, id)
redis.call('ZADD', KEYS[3], now, id)
redis.call('HSET', KEYS[4], id, ARGV[1] .. '|' .. int(now) .. '|0|' .. ARGV[6])
used = used + cost
redis.call('SET', KEYS[5], int(used))
return {'admitted', plan, allowance, used, next_release_in(now, window_ms), id, now}
