-- One page of history, newest first by (at desc, member desc, bytewise).
-- KEYS: account hash, window zset.
-- ARGV: limit, before_at ('' for the first page), before_member.
-- Returns {more (0/1), {route number, name, ...}, member1, at1, member2, at2, ...}.

local limit = tonumber(ARGV[1])
local before_at = tonumber(ARGV[2])
local before = ARGV[3]

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
local page = {}
local offset = 0
while #page <= 2 * limit do
  local batch = redis.call('ZREVRANGEBYSCORE', KEYS[2], max, '-inf', 'WITHSCORES', 'LIMIT', offset, 256)
  if #batch == 0 then break end
  for i = 1, #batch, 2 do
    local member, at = batch[i], tonumber(batch[i + 1])
    if not before_at or at < before_at or bytewise_less(member, before) then
      page[#page + 1] = member
      page[#page + 1] = batch[i + 1]
      if #page > 2 * limit then break end
    end
  end
  offset = offset + 256
end

local more = 0
if #page > 2 * limit then
  more = 1
  page[#page] = nil
  page[#page] = nil
end
local routes = {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 2) == 'n:' then
    routes[#routes + 1] = string.sub(fields[i], 3)
    routes[#routes + 1] = fields[i + 1]
  end
end
local result = {more, routes}
for i = 1, #page do result[#result + 1] = page[i] end
return result
