from tests.conftest import recv, of_type, recv_until


def test_two_users(server, room):
    a, b = server.register(), server.register()
    with server.ws(f"/ws/rooms/{room}", a) as wa:
        assert recv(wa)["type"] == "welcome"
        with server.ws(f"/ws/rooms/{room}", b) as wb:
            w = recv(wb)
            assert w["users"] == sorted([a.username, b.username])
            recv_until(wa, of_type("presence", event="join", user=b.username))
            wb.send('{"type":"message","body":"hello","nonce":"x"}')
            m = recv_until(wa, of_type("message"))
            assert m["body"] == "hello"
