-- Every room's live members.
-- KEYS: rooms; ARGV: room key prefix -> {room, count, members..., room, count, members...}
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local members = live(ARGV[1] .. room)
  table.insert(out, room)
  table.insert(out, #members)
  for _, m in ipairs(members) do
    table.insert(out, m)
  end
end
return out
