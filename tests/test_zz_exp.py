import socket, time, httpx
from tests.conftest import recv, of_type, recv_until
from tests.ws_helpers import *

def test_seed_speed(make_server):
    s = make_server(rate_burst=10000, rate_per_sec=10000)
    a = s.register(); room = s.create_room(a)
    t = time.monotonic(); seed(s, a, room, 500); print("seed 500", time.monotonic() - t)

def test_slow(make_server):
    s = make_server(rate_burst=10000, rate_per_sec=10000, send_queue_max=4)
    a, slow, poster = s.register(), s.register(), s.register()
    room = s.create_room(a)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", s.port))
    ws_slow = s.ws(f"/ws/rooms/{room}", slow, sock=sock, max_queue=1)
    wa = s.ws(f"/ws/rooms/{room}", a)
    welcome(wa)
    t = time.monotonic()
    got = []
    with httpx.Client(base_url=s.url) as http:
        for i in range(2000):
            r = post(http, poster, room, "x" * 4000)
            assert r.status_code == 201
            while True:
                f = recv(wa)
                got.append(f)
                if f["type"] == "message" and f["id"] == r.json()["id"]:
                    break
            if any(f["type"] == "presence" and f["event"] == "leave" for f in got):
                break
    print("posted", i, time.monotonic() - t)
    t = time.monotonic()
    print(close_code(ws_slow, 10), time.monotonic() - t)
