"""`chat serve` as a real process: start-up, and shutdown on SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import PASSWORD, recv, unique


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """`chat serve` on a free port; everything it prints goes to `log_path`."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.data_dir = data_dir
        # Settings beyond the data dir, and more `chat serve` options.
        self.env = env or {}
        self.args = args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "CHAT_DATA_DIR": str(self.data_dir)}
        env.pop("CHAT_SECRET_KEY", None)
        env.update(self.env)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chat", "serve", "--port", str(self.port), *self.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # Generous: on a loaded machine, workers spawned by `--workers` took over 20 s.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("chat serve did not come up")

    def stop(self) -> bool:
        """SIGTERM; True when the process shut down cleanly."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once its graceful shutdown is done.
        return self.proc.wait(20) in (0, -signal.SIGTERM)


@pytest.fixture
def process(tmp_path: Path) -> Iterator[Process]:
    proc = Process(tmp_path)
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        proc.proc.kill()
        proc.proc.wait()


def test_serve_migrates_and_keeps_a_private_secret(process: Process) -> None:
    """`chat serve` on an empty data dir creates the database with `general` and a 0600 key."""
    process.start()
    key = process.data_dir / "secret_key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert len(key.read_text().strip()) >= 32
    http = httpx.Client(base_url=process.url)
    r = http.post("/api/auth/register", json={"username": unique(), "password": PASSWORD})
    assert r.status_code == 201 and r.json()["is_admin"] is True
    assert process.stop()


def test_sigterm_closes_sockets_with_1012_and_loses_nothing(process: Process) -> None:
    """On SIGTERM sockets get 1012, and every acknowledged message survives a restart."""
    process.start()
    http = httpx.Client(base_url=process.url)
    name = unique()
    http.post("/api/auth/register", json={"username": name, "password": PASSWORD})
    token = http.post("/api/auth/token", data={"username": name, "password": PASSWORD}).json()[
        "access_token"
    ]
    acked: list[int] = []
    with connect(
        f"ws://127.0.0.1:{process.port}/ws/rooms/general",
        additional_headers={"Authorization": f"Bearer {token}"},
    ) as ws:
        assert recv(ws)["type"] == "welcome"
        for i in range(15):
            ws.send(json.dumps({"type": "message", "body": f"m{i}", "nonce": f"n{i}"}))
        while len(acked) < 15:
            frame = recv(ws)
            if frame["type"] == "message":
                acked.append(frame["id"])

        assert process.stop()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012

    process.start()
    headers = {"Authorization": f"Bearer {token}"}
    stored = http.get("/api/rooms/general/messages", headers=headers, params={"limit": 200})
    assert [m["id"] for m in stored.json()["messages"]] == acked
    process.stop()
