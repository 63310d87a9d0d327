-- Create or replace an account. KEYS: account hash. ARGV: plan, suspended (0/1).
-- Returns 1 when the account was created.
local existed = redis.call('EXISTS', KEYS[1])
redis.call('HSET', KEYS[1], 'plan', ARGV[1], 'suspended', ARGV[2])
return 1 - existed
