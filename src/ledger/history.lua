-- One page of history, newest first by (at desc, id desc, bytewise).
-- KEYS: history zset, debits hash.
-- ARGV: limit, before_at ('' for the first page), before_id.
-- Returns {more (0/1), id1, record1, id2, record2, ...}.

local limit = tonumber(ARGV[1])
local before_at = tonumber(ARGV[2])
local before_id = ARGV[3]

local function bytewise_less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local max = '+inf'
if before_at then max = ARGV[2] end
local ids = {}
local offset = 0
while #ids <= limit do
  local batch = redis.call('ZREVRANGEBYSCORE', KEYS[1], max, '-inf', 'WITHSCORES', 'LIMIT', offset, 256)
  if #batch == 0 then break end
  for i = 1, #batch, 2 do
    local id, at = batch[i], tonumber(batch[i + 1])
    if not before_at or at < before_at or bytewise_less(id, before_id) then
      ids[#ids + 1] = id
      if #ids > limit then break end
    end
  end
  offset = offset + 256
end

local more = 0
if #ids > limit then
  more = 1
  ids[#ids] = nil
end
local result = {more}
if #ids == 0 then return result end
local records = redis.call('HMGET', KEYS[2], unpack(ids))
for i = 1, #ids do
  result[#result + 1] = ids[i]
  result[#result + 1] = records[i] or ''
end
return result
