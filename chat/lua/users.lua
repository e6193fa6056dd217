-- A room's live members.
-- KEYS: room set -> {members...}
return live(KEYS[1])
