-- A user's first socket on this process joins a room; 1 if no other process had them.
-- KEYS: room set, rooms; ARGV: member, user, ttl, room -> {arrived, members...}
local members = live(KEYS[1])
local arrived = has_other(members, ARGV[2], ARGV[1]) and 0 or 1
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('SADD', KEYS[2], ARGV[4])
local out = live(KEYS[1])
table.insert(out, 1, arrived)
return out
