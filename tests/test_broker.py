"""How the Redis backend carries room events between processes."""

from chat.broker import pack_events, unpack_events
from chat.events import RoomEvent


def test_room_events_survive_the_trip_through_one_redis_message() -> None:
    """Several rooms' events, with and without a seq or a user to skip, and payloads holding
    spaces, newlines and any bytes, come out as they went in, in order."""
    events = [
        RoomEvent("general", "message", b'{"type":"message","id":1}', seq=1),
        RoomEvent("general", "typing", b'{"user":"a b"}\n', skip_user="ann.b-c_1"),
        RoomEvent("x", "presence", b""),
        RoomEvent("general", "message", bytes(range(256)), seq=2),
    ]
    assert unpack_events(pack_events(events)) == events
    assert unpack_events(pack_events([])) == []
