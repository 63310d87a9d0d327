-- An account's prepaid grants: create, list, void (see the prelude for
-- their layout). Each call is one atomic step, like a debit.
-- KEYS: account hash, grants.
-- ARGV[1] = 'create': ARGV[2] credits, ARGV[3] expires (unix ms, -1 never),
--   ARGV[4] note. Returns {'created', number, created_at},
--   {'no_account'}, {'past', now} (it would expire before it starts) or
--   {'too_large', total} (the live grants would hold more than MAX_CREDITS).
-- ARGV[1] = 'list': returns {'grants', now, {number, credits, remaining,
--   expires, created, voided (0/1), note, …}} in spending order, or {'no_account'}.
-- ARGV[1] = 'void': ARGV[2] number. Returns {'voided', remaining voided}
--   (0 when it was voided before), {'unknown'} or {'no_account'}.

if redis.call('HEXISTS', KEYS[1], 'plan') == 0 then return {'no_account'} end
local now = ledger_now()
local account = redis.call('HMGET', KEYS[1], 'gs', 'ge')
local gstate = grants_state(KEYS[2], account[1], account[2], now)
local op = ARGV[1]

local function save()
  if gstate.changed then redis.call('HSET', KEYS[1], unpack(grant_fields(gstate))) end
end

if op == 'create' then
  local credits = tonumber(ARGV[2])
  local expires = tonumber(ARGV[3])
  if expires >= 0 and expires <= now then
    save()
    return {'past', now}
  end
  if gstate.sum + credits > MAX_CREDITS then
    save()
    return {'too_large', int(gstate.sum + credits)}
  end
  local number = redis.call('HINCRBY', KEYS[1], 'gn', 1)
  local g = { credits = credits, remaining = credits, expires = expires, created = now, voided = false }
  redis.call('HSET', KEYS[2], int(number), grant_value(g))
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], int(number) .. ':note', ARGV[4]) end
  gstate.sum = gstate.sum + credits
  if expires >= 0 and (gstate.soonest < 0 or expires < gstate.soonest) then gstate.soonest = expires end
  gstate.changed = true
  save()
  return {'created', number, now}
end

if op == 'list' then
  save()
  local out = {}
  for _, g in ipairs(grants_all(KEYS[2])) do
    local voided = 0
    if g.voided then voided = 1 end
    out[#out + 1] = g.number
    out[#out + 1] = g.credits
    out[#out + 1] = g.remaining
    out[#out + 1] = g.expires
    out[#out + 1] = g.created
    out[#out + 1] = voided
    out[#out + 1] = redis.call('HGET', KEYS[2], int(g.number) .. ':note') or ''
  end
  return {'grants', now, out}
end

if op == 'void' then
  local number = ARGV[2]
  local g = grant_parse(redis.call('HGET', KEYS[2], number))
  if not g then
    save()
    return {'unknown'}
  end
  if g.voided then
    save()
    return {'voided', 0}
  end
  local voided = 0
  if grant_live(g, now) then
    voided = g.remaining
    gstate.sum = gstate.sum - g.remaining
    gstate.changed = true
  end
  g.voided = true
  redis.call('HSET', KEYS[2], number, grant_value(g))
  -- The soonest expiry may have been this grant's.
  gstate.sum, gstate.soonest = grants_totals(grants_all(KEYS[2]), now)
  gstate.changed = true
  save()
  return {'voided', voided}
end
return redis.error_reply('unknown grants operation')
