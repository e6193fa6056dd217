"""Credentials never reach the logs of a real `chat serve` process."""

from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.conftest import PASSWORD, unique
from tests.test_lifecycle import Process
from tests.ws_helpers import closed_with


def test_tokens_and_passwords_never_logged(tmp_path: Path) -> None:
    """Access log and app log hold no password and no token, not even from `?token=` URLs."""
    server = Process(tmp_path)
    server.start()
    port, url = server.port, server.url
    try:
        http = httpx.Client(base_url=url)
        name = unique()
        http.post("/api/auth/register", json={"username": name, "password": PASSWORD})
        token = http.post("/api/auth/token", data={"username": name, "password": PASSWORD}).json()[
            "access_token"
        ]
        http.post("/api/auth/token", data={"username": name, "password": "wrong password 9"})
        http.get(f"/api/rooms?token={token}")
        http.get("/api/rooms", headers={"Authorization": f"Bearer {token}"})
        with connect(f"ws://127.0.0.1:{port}/ws/rooms/general?token={token}") as ws:
            ws.recv(timeout=5)
        with connect(f"ws://127.0.0.1:{port}/ws/rooms/nowhere?token={token}") as ws:
            assert closed_with(ws).code == 4404
    finally:
        assert server.stop()
    logged = server.log_path.read_text()
    assert "/ws/rooms/general?token=[redacted]" in logged  # The line is there, redacted.
    for secret in (token, PASSWORD, "wrong password 9", token.split(".")[2]):
        assert secret not in logged
