"""Credentials never reach the logs of a real `chat serve` process."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.conftest import PASSWORD, unique
from tests.test_lifecycle import free_port
from tests.ws_helpers import closed_with


def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "chat serve exited"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("chat serve did not come up")


def test_tokens_and_passwords_never_logged(tmp_path: Path) -> None:
    """Access log and app log hold no password and no token, not even from `?token=` URLs."""
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chat", "serve", "--port", str(port)],
            env={**os.environ, "CHAT_DATA_DIR": str(tmp_path)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
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
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    logged = log_path.read_text()
    assert "/ws/rooms/general?token=[redacted]" in logged  # The line is there, redacted.
    for secret in (token, PASSWORD, "wrong password 9", token.split(".")[2]):
        assert secret not in logged
