"""Nothing acknowledged is lost: SIGKILL mid-stream, restart, resume."""

import contextlib
import json
import signal
import threading
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import PASSWORD, unique
from tests.test_lifecycle import Process

SENDERS = 4


def token_for(url: str) -> str:
    name = unique()
    httpx.post(f"{url}/api/auth/register", json={"username": name, "password": PASSWORD})
    r = httpx.post(f"{url}/api/auth/token", data={"username": name, "password": PASSWORD})
    return r.json()["access_token"]


def stream(ws: ClientConnection, index: int, acked: list[int], seen: list[int]) -> None:
    """Send messages without pause; record the ids of our acknowledged ones and all seen."""
    sent = 0
    try:
        while True:
            ws.send(
                json.dumps(
                    {"type": "message", "body": f"s{index}-{sent}", "nonce": f"{index}-{sent}"}
                )
            )
            sent += 1
            while True:
                frame = json.loads(ws.recv(timeout=10))
                if frame["type"] == "message":
                    seen.append(frame["id"])
                    if frame["nonce"] == f"{index}-{sent - 1}":
                        acked.append(frame["id"])
                        break
    except (ConnectionClosed, TimeoutError, OSError):
        return


def test_sigkill_loses_no_acknowledged_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After SIGKILL mid-stream and a restart, every acknowledged message is stored once."""
    monkeypatch.setenv("CHAT_RATE_BURST", "100000")
    monkeypatch.setenv("CHAT_RATE_PER_SEC", "100000")
    server = Process(tmp_path)
    server.start()
    try:
        tokens = [token_for(server.url) for _ in range(SENDERS)]
        ws_url = f"ws://127.0.0.1:{server.port}/ws/rooms/general"
        acked: list[list[int]] = [[] for _ in range(SENDERS)]
        seen: list[list[int]] = [[] for _ in range(SENDERS)]
        stack = contextlib.ExitStack()
        sockets = [
            stack.enter_context(
                connect(ws_url, additional_headers={"Authorization": f"Bearer {t}"})
            )
            for t in tokens
        ]
        for ws in sockets:
            assert json.loads(ws.recv(timeout=5))["type"] == "welcome"
        threads = [
            threading.Thread(target=stream, args=(ws, i, acked[i], seen[i]))
            for i, ws in enumerate(sockets)
        ]
        for thread in threads:
            thread.start()
        while sum(len(a) for a in acked) < 200:
            threading.Event().wait(0.05)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        for thread in threads:
            thread.join(15)
        stack.close()

        server.start()
        headers = {"Authorization": f"Bearer {tokens[0]}"}
        stored: list[dict[str, object]] = []
        with httpx.Client(base_url=server.url, headers=headers) as http:
            while True:
                after = stored[-1]["id"] if stored else 0
                page = http.get(
                    "/api/rooms/general/messages", params={"after": after, "limit": 200}
                )
                batch = page.json()["messages"]
                if not batch:
                    break
                stored += batch
        ids = [m["id"] for m in stored]
        assert ids == list(range(1, len(ids) + 1)), "gaps or repeats in the stored ids"
        for acked_ids in acked:
            assert set(acked_ids) <= set(ids)
        assert len({m["nonce"] for m in stored}) == len(stored), "a message was stored twice"

        # Each client resumes from the last id it saw and ends with the same history.
        histories = []
        for token, seen_ids in zip(tokens, seen, strict=True):
            since = max(seen_ids, default=0)
            with connect(
                f"{ws_url}?since={since}", additional_headers={"Authorization": f"Bearer {token}"}
            ) as ws:
                welcome = json.loads(ws.recv(timeout=5))
            histories.append(sorted(set(seen_ids)) + [m["id"] for m in welcome["history"]])
        for history in histories:
            assert history[-len(ids) :] == ids[-len(history) :] or history == ids
            assert history == sorted(history) and len(set(history)) == len(history)
            assert history[-1] == ids[-1]

        # A retry after a lost acknowledgement returns the same stored message.
        last = stored[-1]
        index = str(last["nonce"]).split("-")[0]
        with connect(
            ws_url, additional_headers={"Authorization": f"Bearer {tokens[int(index)]}"}
        ) as ws:
            json.loads(ws.recv(timeout=5))
            ws.send(json.dumps({"type": "message", "body": "retry", "nonce": last["nonce"]}))
            again = json.loads(ws.recv(timeout=5))
            while again["type"] != "message":
                again = json.loads(ws.recv(timeout=5))
        assert again["id"] == last["id"] and again["body"] == last["body"]
        assert server.stop()
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
