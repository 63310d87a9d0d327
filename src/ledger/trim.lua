-- Shared prelude (prepended to debit.lua and balance.lua).
-- KEYS[2] = window zset, KEYS[4] = debits hash, KEYS[5] = used total.
-- Every number here is an integer well below 2^53, so Lua's doubles are exact.

local function ledger_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function cost_of(record)
  if not record then return 0 end
  return tonumber(string.match(record, '^(%d+)')) or 0
end

local function int(n)
  return string.format('%.0f', n)
end

-- Drops debits that left the window (at <= now - window) and subtracts their
-- costs from the running total; returns the total. Work is proportional to
-- what expired, never to the window's size.
local function trim_window(now, window_ms)
  local used = tonumber(redis.call('GET', KEYS[5]) or '0')
  local cutoff = now - window_ms
  local changed = false
  while true do
    local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff, 'LIMIT', 0, 512)
    if #expired == 0 then break end
    local records = redis.call('HMGET', KEYS[4], unpack(expired))
    for i = 1, #expired do
      used = used - cost_of(records[i])
    end
    redis.call('ZREM', KEYS[2], unpack(expired))
    changed = true
    if #expired < 512 then break end
  end
  if used < 0 then used = 0 end
  if changed then redis.call('SET', KEYS[5], int(used)) end
  return used
end

-- Milliseconds until the oldest counted debit leaves, or -1.
local function next_release_in(now, window_ms)
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #first == 0 then return -1 end
  return tonumber(first[2]) + window_ms - now
end
