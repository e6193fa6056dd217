-- Take the expired members out of a room, and the room out of the rooms once empty.
-- KEYS: room set, rooms; ARGV: room -> {expired members..., '', live members...}
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
end
table.insert(expired, '')
for _, m in ipairs(live(KEYS[1])) do
  table.insert(expired, m)
end
return expired
