-- The usage report: an account's window and its usage aggregates (see the
-- prelude), as of the ledger's clock, in one atomic read. Its cost depends on
-- the number of aggregate fields (days × routes), not on the debits. When
-- the aggregates are not kept (an account from before them, or a changed
-- window) or do not add up to `used`, they are rebuilt from the window
-- first — a scan, once — when the window holds at most ARGV[2] debits;
-- a larger one is left to the admin recount, which rebuilds them too.
-- KEYS: account hash, window zset, usage aggregates.
-- ARGV: window_ms, the most debits a report may rebuild from.
-- Returns {} when there is no account, {'damaged', field} when its stored
-- totals cannot be trusted (or `used` disagrees with the window),
-- {'unbuilt', debits} when a rebuild is due and the window is larger, else
-- {plan, suspended, used, now, rebuilt (0: no, 1: not kept, 2: disagreed),
--  {field, value, ...}, {route number, route name, ...}}.

local account = redis.call('HMGET', KEYS[1], 'plan', 'suspended', 'used', 'seen', 'first', 'uw')
if not account[1] then return {} end
local window_ms = tonumber(ARGV[1])
local now = ledger_now()
local cutoff = now - window_ms
local state, damaged = window_state(account[3], account[4], account[5], usage_keeper(KEYS[3], account[6], window_ms))
if not state then return {'damaged', damaged} end
if advance(KEYS[2], state, cutoff) then save_state(KEYS[1], state) end
-- Nothing counts: empty aggregates are exact (as the first debit finds too).
if not state.usage and state.first < 0 and state.used == 0 then
  state.usage = usage_write(KEYS[1], KEYS[3], new_totals(), window_ms)
end

-- Whether the aggregates add up to `used`, as they must: the credits spent
-- less what grants paid, and the credits leaving.
local function agree(fields)
  local spent, grants, leaving = 0, 0, 0
  for i = 1, #fields, 2 do
    local kind = string.sub(fields[i], 1, 2)
    if kind == 'c:' then spent = spent + tonumber(fields[i + 1]) end
    if kind == 'g:' then grants = grants + tonumber(fields[i + 1]) end
    if kind == 'r:' then leaving = leaving + tonumber(fields[i + 1]) end
  end
  if not leave_days_kept(window_ms) then leaving = spent - grants end
  return spent - grants == state.used and leaving == state.used
end

local rebuilt = 0
local fields = {}
if state.usage then
  fields = redis.call('HGETALL', KEYS[3])
  if not agree(fields) then rebuilt = 2 end
else
  rebuilt = 1
end
if rebuilt > 0 then
  local debits = redis.call('ZCOUNT', KEYS[2], '(' .. int(cutoff), '+inf')
  if debits > tonumber(ARGV[2]) then return {'unbuilt', debits} end
  usage_rebuild(KEYS[1], KEYS[2], KEYS[3], cutoff, window_ms)
  fields = redis.call('HGETALL', KEYS[3])
  -- Rebuilt from the window and still not `used`: the total is wrong (the
  -- admin recount repairs it).
  if not agree(fields) then return {'damaged', 'used'} end
end

-- The names of the routes the aggregates mention.
local numbers, names = {}, {}
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 2) == 'n:' then
    local number = string.match(fields[i], ':(%d+)$')
    if number and not numbers[number] then
      numbers[number] = true
      names[#names + 1] = number
    end
  end
end
local routes = {}
if #names > 0 then
  local lookup = {}
  for i = 1, #names do lookup[i] = 'n:' .. names[i] end
  local found = redis.call('HMGET', KEYS[1], unpack(lookup))
  for i = 1, #names do
    routes[#routes + 1] = names[i]
    routes[#routes + 1] = found[i] or ''
  end
end
return {account[1], account[2] or '0', state.used, now, rebuilt, fields, routes}
