"""Servers under test, started as their own processes on loopback."""

import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PASSWORD = "bench password 1"
# Benchmarks measure the server, not the abuse limits.
UNLIMITED = {
    "CHAT_RATE_BURST": "100000000",
    "CHAT_RATE_PER_SEC": "100000000",
    "CHAT_MAX_CONNECTIONS_PER_USER": "100000",
    "CHAT_SEND_QUEUE_MAX": "100000",
    "CHAT_REGISTER_BURST": "100000000",
    "CHAT_REGISTER_GLOBAL_BURST": "100000000",
    "CHAT_HASH_QUEUE_MAX": "100000",
    "CHAT_WS_FRAMES_BURST": "100000000",
    "CHAT_WS_FRAMES_PER_SEC": "100000000",
    "CHAT_WS_HANDSHAKES_BURST": "100000000",
    "CHAT_WS_HANDSHAKES_PER_SEC": "100000000",
    "CHAT_ROOMS_PER_USER": "100000",
    "CHAT_ROOM_CREATE_BURST": "100000",
    "CHAT_MEMBERSHIP_BURST": "100000000",
    "CHAT_MAX_CONNECTIONS": "100000",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_secs(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class ChatCluster:
    """`chat serve` processes sharing one database and broker."""

    data_dir: Path
    env: dict[str, str]
    processes: int = 1
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _env: dict[str, str] = field(default_factory=dict)

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    @property
    def ws_urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{port}" for port in self.ports]

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def start(self) -> None:
        # The key is kept across a restart: the tokens issued before stay valid.
        env = {
            **os.environ,
            **UNLIMITED,
            "CHAT_DATA_DIR": str(self.data_dir),
            "CHAT_SECRET_KEY": secrets.token_urlsafe(48),
            **self.env,
        }
        subprocess.run(
            [sys.executable, "-m", "chat", "migrate"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self._env = env
        self.ports = [free_port() for _ in range(self.processes)]
        self._launch()

    def _launch(self) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "chat", "serve", "--port", str(port)],
                env={**self._env, "PYTHONUNBUFFERED": "1"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for port in self.ports
        ]
        for url in self.urls:
            wait_healthy(url)

    def restart(self) -> float:
        """Stop every process, then start them again on the same ports, database and
        secret key; time.time() when they are healthy again."""
        self.stop()
        self._launch()
        return time.time()

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def accounts(self, count: int) -> list[str]:
        """Tokens of `count` new users."""
        names = self.register(count)
        with httpx.Client(base_url=self.urls[0], timeout=30) as http:
            return [
                http.post("/api/auth/token", data={"username": n, "password": PASSWORD}).json()[
                    "access_token"
                ]
                for n in names
            ]

    def register(self, count: int) -> list[str]:
        """Usernames of `count` new users, all with the password PASSWORD."""
        names = []
        with httpx.Client(base_url=self.urls[0], timeout=30) as http:
            for _ in range(count):
                name = f"b{secrets.token_hex(5)}"
                r = http.post("/api/auth/register", json={"username": name, "password": PASSWORD})
                r.raise_for_status()
                names.append(name)
        return names

    def create_room(self, token: str, members: Sequence[str] = ()) -> str:
        """A new room of the user of `token`, which the users of `members` join first."""
        name = f"bench-{secrets.token_hex(4)}"
        with httpx.Client(base_url=self.urls[0], timeout=30) as http:
            r = http.post("/api/rooms", json={"name": name}, headers=_bearer(token))
            r.raise_for_status()
            # Members before their sockets open, as in a room people belong to: a user's
            # first socket would otherwise send a `member` frame to those already open
            # while the load generator takes over their transports.
            for member in members:
                username = http.get("/api/me", headers=_bearer(member)).json()["username"]
                r = http.put(f"/api/rooms/{name}/members/{username}", headers=_bearer(member))
                r.raise_for_status()
        return name


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class BaselineServer:
    """A baseline chat server (`bench.baseline_seed` or `bench.baseline_bare`), one process."""

    module: str
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{self.port}"]

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def start(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--port", str(self.port)],
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_secs: float = 30) -> None:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def raise_open_files_limit() -> int:
    """Raise this process's open-files limit to its hard limit; children inherit it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def wait_healthy(url: str, timeout_secs: float = 60) -> None:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")
