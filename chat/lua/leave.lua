-- A user's last socket on this process leaves a room; 1 if no other process has them.
-- KEYS: room set; ARGV: member, user -> {left, members...}
redis.call('ZREM', KEYS[1], ARGV[1])
local members = live(KEYS[1])
local left = has_other(members, ARGV[2], ARGV[1]) and 0 or 1
table.insert(members, 1, left)
return members
