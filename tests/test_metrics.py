"""GET /metrics: scraped from real servers and read with prometheus_client's own parser."""

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message, Receive, Scope, Send

from chat.prometheus import HttpMetrics, Metrics
from tests.conftest import (
    PASSWORD,
    REDIS_URL,
    Server,
    make_settings,
    need,
    redis_available,
    unique,
)
from tests.test_lifecycle import Process
from tests.ws_helpers import frames_until, post, welcome

TOKEN = "scrape-token-0123456789abcdef"
# Samples by name, and by (name, one label's value) for labelled ones.
Samples = dict[str | tuple[str, str], float]


def scrape(url: str, token: str = TOKEN) -> Samples:
    r = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=15)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            labels = [v for k, v in sample.labels.items() if k != "le"]
            if "le" in sample.labels:
                continue  # Buckets: their _count and _sum are enough here.
            key: str | tuple[str, str] = (sample.name, labels[0]) if labels else sample.name
            samples[key] = sample.value
    return samples


def wait_for(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        make_settings(
            tmp_path_factory.mktemp("metrics"),
            metrics_token=TOKEN,
            rate_burst=10**6,
            rate_per_sec=10**6,
        )
    )
    srv.start()
    srv.admin = srv.register(unique("admin"))
    yield srv
    srv.stop()


def test_values_move_with_the_traffic(metered: Server) -> None:
    """Messages stored and delivered, sockets open, commits timed, the loop probed, the
    broker up, HTTP responses by class: each moves as the server works."""
    alice, bob = metered.register(), metered.register()
    room = metered.create_room(alice)
    before = scrape(metered.url)
    assert before["chat_broker_up"] == 1
    assert before["chat_event_loop_lag_seconds_count"] > 0
    # Process figures, for one process.
    assert before["process_resident_memory_bytes"] > 0
    with metered.ws(f"/ws/rooms/{room}", alice) as a, metered.ws(f"/ws/rooms/{room}", bob) as b:
        welcome(a)
        welcome(b)
        opened = scrape(metered.url)
        assert opened["chat_connections", "room"] == before["chat_connections", "room"] + 2
        with httpx.Client(base_url=metered.url) as http:
            for i in range(5):
                assert post(http, alice, room, f"m{i}").status_code == 201
        received = sum(
            len(frames_until(ws, lambda f: f.get("type") == "message" and f["body"] == "m4"))
            for ws in (a, b)
        )
        after = scrape(metered.url)
    stored = after["chat_messages_stored_total"] - before["chat_messages_stored_total"]
    assert stored == 5
    # Every frame the sockets got after their welcome: five messages each, and presence.
    delivered = after["chat_deliveries_total"] - before["chat_deliveries_total"]
    assert delivered == received and received >= 10
    commits = after["chat_db_commit_seconds_count"] - before["chat_db_commit_seconds_count"]
    assert 1 <= commits <= 5
    assert after["chat_db_commit_seconds_sum"] > before["chat_db_commit_seconds_sum"]
    assert after["chat_event_loop_lag_seconds_count"] > before["chat_event_loop_lag_seconds_count"]
    # The 5 posts and the scrapes: all 2xx.
    ok = "chat_http_responses_total", "2xx"
    assert after[ok] - before[ok] >= 5
    rooms = "chat_connections", "room"
    wait_for(lambda: scrape(metered.url)[rooms] == before[rooms])


def test_only_the_token_holder_may_scrape(metered: Server, server: Server) -> None:
    """401 without the token, with a wrong one or another scheme; 404 where no token is set."""
    url = f"{metered.url}/metrics"
    assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    four_xx = scrape(metered.url)["chat_http_responses_total", "4xx"]
    for headers in (
        {},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {metered.admin.token if metered.admin else ''}"},
    ):
        r = httpx.get(url, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == "Bearer"
        assert "CHAT_METRICS_TOKEN" in r.json()["detail"]
    assert scrape(metered.url)["chat_http_responses_total", "4xx"] == four_xx + 6
    # The session's server has no CHAT_METRICS_TOKEN: there is no such page.
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
        r = httpx.get(f"{server.url}/metrics", headers=headers)
        assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    assert "/metrics" not in httpx.get(f"{metered.url}/openapi.json").json()["paths"]


def _stored_by_worker(directory: Path) -> dict[int, float]:
    """Each worker's own count of stored messages, read from its file."""
    counts: dict[int, float] = {}
    for file in directory.glob("counter_*.db"):
        pid = int(file.stem.split("_")[1])
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(file)):
            if key.startswith('["chat_messages_stored", "chat_messages_stored_total"'):
                counts[pid] = counts.get(pid, 0) + value
    return counts


def test_every_worker_counts(tmp_path: Path) -> None:
    """Under `chat serve --workers 2` a scrape, whichever worker answers it, counts the
    messages both workers stored."""
    need(redis_available(), "Redis at 127.0.0.1:6379")
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"left by an earlier run")
    env = {
        "CHAT_METRICS_TOKEN": TOKEN,
        "CHAT_BROKER_URL": REDIS_URL,
        "CHAT_REDIS_NAMESPACE": unique("metrics"),
        "CHAT_RATE_BURST": "100000",
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
    }
    server = Process(tmp_path, env, ("--workers", "2"))
    try:
        server.start()
        name = unique()
        httpx.post(f"{server.url}/api/auth/register", json={"username": name, "password": PASSWORD})
        r = httpx.post(
            f"{server.url}/api/auth/token", data={"username": name, "password": PASSWORD}
        )
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        posted = 0
        # A new connection for each message lets either worker take it; go on until both
        # have stored some (bounded, in case one worker never gets a connection).
        while posted < 400:
            for _ in range(10):
                r = httpx.post(
                    f"{server.url}/api/rooms/general/messages",
                    json={"body": f"m{posted}"},
                    headers=headers,
                )
                assert r.status_code == 201, r.text
                posted += 1
            by_worker = _stored_by_worker(directory)
            if len(by_worker) == 2 and all(by_worker.values()):
                break
        assert len(by_worker) == 2 and all(by_worker.values()), by_worker
        assert sum(by_worker.values()) == posted
        for _ in range(6):
            samples = scrape(server.url)
            assert samples["chat_messages_stored_total"] == posted
            # Not one process's figures: they would not add up across workers.
            assert "process_resident_memory_bytes" not in samples
    finally:
        assert server.stop()
    assert not (directory / "counter_1.db").exists()
    # Each worker's live gauges left with it; its counters stay.
    assert not list(directory.glob("gauge_live*"))
    assert len(list(directory.glob("counter_*.db"))) == 2
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") is None


def test_a_crash_counts_as_a_5xx() -> None:
    """An exception that escapes the app becomes Starlette's 500 outside this middleware:
    it is counted all the same; a response that started counts by its own status."""
    metrics = Metrics()

    async def crash(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/late":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom")

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        pass

    app = HttpMetrics(crash, metrics)
    for path in ("/early", "/late"):
        with pytest.raises(RuntimeError):
            asyncio.run(app({"type": "http", "path": path}, receive, send))

    def count(code: str) -> float | None:
        return metrics.registry.get_sample_value("chat_http_responses_total", {"code": code})

    assert count("5xx") == 1 and count("2xx") == 1
