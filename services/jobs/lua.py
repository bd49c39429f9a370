"""Lua scripts for the hot job transitions of the worker: each checks the job's
state and run token and writes atomically, in one round trip.

KEYS[1] is the job hash, KEYS[2] the active-jobs zset.
"""

# Claim a QUEUED job, or a RUNNING one whose worker stopped beating.
# ARGV: run token, now, stale-after seconds, job id, events channel.
CLAIM = """
local j = redis.call('HMGET', KEYS[1], 'state', 'heartbeat', 'attempt', 'start_time')
if not j[1] then return 'missing' end
if j[1] == 'RUNNING' then
  if tonumber(ARGV[2]) - tonumber(j[2] or '0') < tonumber(ARGV[3]) then return 'busy' end
elseif j[1] ~= 'QUEUED' then
  return j[1]
end
redis.call('HSET', KEYS[1], 'state', 'RUNNING', 'run_token', ARGV[1], 'heartbeat', ARGV[2],
  'update_time', ARGV[2], 'attempt', tonumber(j[3] or '0') + 1, 'stage', 'PARSING')
if (j[4] or '') == '' or j[4] == '0' or j[4] == '0.0' then
  redis.call('HSET', KEYS[1], 'start_time', ARGV[2])
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], '1')
return 'ok'
"""

# Heartbeat and progress of the owner of a RUNNING job; anything else means the
# worker lost the job (cancelled, deleted, re-queued to another worker).
# ARGV: run token, now, job id, events channel, then field/value pairs.
BEAT = """
local j = redis.call('HMGET', KEYS[1], 'state', 'run_token')
if not j[1] then return 'missing' end
if j[1] ~= 'RUNNING' then return j[1] end
if j[2] ~= ARGV[1] then return 'token' end
redis.call('HSET', KEYS[1], 'heartbeat', ARGV[2])
if #ARGV > 4 then
  for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  redis.call('HSET', KEYS[1], 'update_time', ARGV[2])
  redis.call('PUBLISH', ARGV[4], '1')
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 'ok'
"""

# Release a lock only if it still holds our token. KEYS[1] lock, ARGV[1] token.
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Extend a lock only if it still holds our token. KEYS[1] lock, ARGV: token, ttl ms.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
