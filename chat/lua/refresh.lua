-- Push back the expiry of this process's members of a room (re-added if a sweep
-- took them meanwhile).
-- KEYS: room set; ARGV: ttl, members...
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i])
end
