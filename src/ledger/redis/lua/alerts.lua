-- The alert senders' operations on queued alerts (docs/alerts.md). An
-- account's queue is the hash KEYS[1] (`cg:{<account>}:q`): alert number →
--   <p|f> <next> <attempts> <at> <threshold ppm> <used> <allowance> <available>[ <last error>]
-- (p = pending: due at <next>, or leased to a sender until then; f =
-- failed: listed until <next>). Written by the debit (prelude.lua,
-- queue_crossed_alerts); claimed, retried and removed here.
-- ARGV[1] is the operation:
--   claim <lease ms> <max>    → { now, next due or -1, number, record, … }:
--                               the due pending alerts (at most <max>),
--                               now leased until now + lease; failed ones
--                               past their listing time go
--   finish <number> <token> <d|r> <wait ms> <retry for ms> <kept ms> <error>
--                             → { d|r|f|x, next due or -1 }: d = delivered
--                               (removed), r = retry after <wait>, f = gave
--                               up (failed: <retry for> passed since the
--                               crossing), x = not held (gone, or leased
--                               anew: its <next> is not <token>)
--   due                       → next due or -1
--   accounts <limit>          → KEYS[1] is the index (`cg:alerts`): the
--                               accounts whose score is due (≤ now)

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(n)
  return string.format('%.0f', n)
end

local PATTERN = '^([pf]) (%-?%d+) (%d+) (%-?%d+) (%d+ %d+ %d+ %d+) ?(.*)$'

-- The earliest <next> in the queue, or -1 when it is empty.
local function next_due(kq)
  local all = redis.call('HVALS', kq)
  local due = -1
  for i = 1, #all do
    local _, next = string.match(all[i], PATTERN)
    next = tonumber(next)
    if next and (due < 0 or next < due) then due = next end
  end
  return due
end

local op = ARGV[1]
local kq = KEYS[1]

if op == 'accounts' then
  return redis.call('ZRANGEBYSCORE', kq, '-inf', int(now_ms()), 'LIMIT', 0, tonumber(ARGV[2]))
end

if op == 'due' then
  return int(next_due(kq))
end

local now = now_ms()

if op == 'claim' then
  local lease = tonumber(ARGV[2])
  local max = tonumber(ARGV[3])
  local all = redis.call('HGETALL', kq)
  local out = { int(now), '-1' }
  local taken = 0
  for i = 1, #all, 2 do
    local number, record = all[i], all[i + 1]
    local state, next, attempts, at, facts, last = string.match(record, PATTERN)
    next = tonumber(next)
    if not state then
      -- Not a record this code wrote (a hand edit): it can never be sent.
      redis.call('HDEL', kq, number)
    elseif state == 'f' and next <= now then
      redis.call('HDEL', kq, number)
    elseif state == 'p' and next <= now and taken < max then
      taken = taken + 1
      record = 'p ' .. int(now + lease) .. ' ' .. int(tonumber(attempts) + 1) .. ' ' .. at .. ' ' .. facts
      if last ~= '' then record = record .. ' ' .. last end
      redis.call('HSET', kq, number, record)
      out[#out + 1] = number
      out[#out + 1] = record
    end
  end
  out[2] = int(next_due(kq))
  return out
end

if op == 'finish' then
  local number, token, outcome = ARGV[2], ARGV[3], ARGV[4]
  local record = redis.call('HGET', kq, number)
  local settled = 'x'
  if record then
    local state, next, attempts, at, facts = string.match(record, PATTERN)
    if state == 'p' and next == token then
      if outcome == 'd' then
        redis.call('HDEL', kq, number)
        settled = 'd'
      else
        local error = string.gsub(ARGV[8], '[\r\n]', ' ')
        if now - tonumber(at) >= tonumber(ARGV[6]) then
          record = 'f ' .. int(now + tonumber(ARGV[7])) .. ' ' .. attempts .. ' ' .. at .. ' ' .. facts
          settled = 'f'
        else
          record = 'p ' .. int(now + tonumber(ARGV[5])) .. ' ' .. attempts .. ' ' .. at .. ' ' .. facts
          settled = 'r'
        end
        if error ~= '' then record = record .. ' ' .. error end
        redis.call('HSET', kq, number, record)
      end
    elseif outcome == 'd' and state == 'p' then
      -- Delivered after the lease ran out: still delivered; the sender
      -- that holds it now may deliver it again (at least once).
      redis.call('HDEL', kq, number)
      settled = 'd'
    end
  end
  return { settled, int(next_due(kq)) }
end

return redis.error_reply('unknown alerts operation ' .. tostring(op))
