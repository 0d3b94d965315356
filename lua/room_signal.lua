-- room_signal: may a WebRTC signal go from one member of a room to another? Checks both are
-- members, that the receiver has not turned the sender's voice off, and resolves offers that cross
-- (glare): the fleet's web client offers from both sides when a member joins, and two crossing
-- offers leave both peers with mismatched sessions, so the first offer of a pair wins and the
-- crossing one is withheld (its sender's browser then answers the first, rolling its own back).
--
-- KEYS[1] members hash       P..members
-- KEYS[2] pending offer      P..offer:<from>><to>   (this direction)
-- KEYS[3] pending offer      P..offer:<to>><from>   (the other direction)
-- ARGV[1] sender session id  ARGV[2] receiver session id
-- ARGV[3] kind: 'offer', 'answer' or 'ice'   ARGV[4] how long an offer stays pending, ms
--
-- Returns JSON {status=…}: relay (send it), not_a_member (the sender is not in the room),
-- no_receiver (the receiver is not), voice_off (the receiver turned the sender's voice off),
-- crossing (an offer while one from the receiver is pending).

if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return cjson.encode({ status = 'not_a_member' })
end
local receiver = redis.call('HGET', KEYS[1], ARGV[2])
if not receiver then
  return cjson.encode({ status = 'no_receiver' })
end
local prefs = cjson.decode(receiver).raw_voice_preferences
if type(prefs) == 'table' and prefs[ARGV[1]] == false then
  return cjson.encode({ status = 'voice_off' })
end
if ARGV[3] == 'offer' then
  if redis.call('EXISTS', KEYS[3]) == 1 then
    return cjson.encode({ status = 'crossing' })
  end
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
elseif ARGV[3] == 'answer' then
  -- The receiver's offer is answered: a later offer either way (a renegotiation) may go.
  redis.call('DEL', KEYS[3])
end
return cjson.encode({ status = 'relay' })
