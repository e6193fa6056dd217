-- Run ahead of every presence script. Scripts run atomically in Redis, on Redis's
-- clock, so the hosts' clocks need not agree.
-- A room's set holds members "NODE:USER", each scored by when it expires.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6

-- The members of a room's set that have not expired.
local function live(key)
  return redis.call('ZRANGEBYSCORE', key, now, '+inf')
end

-- Whether `user` is in `members` through a member other than `me`: another process's.
local function has_other(members, user, me)
  for _, m in ipairs(members) do
    if m ~= me and string.sub(m, string.find(m, ':') + 1) == user then
      return true
    end
  end
  return false
end
