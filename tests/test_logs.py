"""Credentials never reach the logs of a real `chat serve` process."""

import json
from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.conftest import PASSWORD, unique
from tests.test_cli import assert_one_line_error, run_chat
from tests.test_lifecycle import Process
from tests.ws_helpers import closed_with, raw_text_frame


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


def test_text_that_is_not_utf8_is_one_warning_line(tmp_path: Path) -> None:
    """A client's bytes that are not UTF-8 close its socket with 1007 and log one warning,
    not a server error with a traceback that any client could repeat to flood the log."""
    server = Process(tmp_path)
    server.start()
    try:
        http = httpx.Client(base_url=server.url)
        name = unique()
        http.post("/api/auth/register", json={"username": name, "password": PASSWORD})
        token = http.post("/api/auth/token", data={"username": name, "password": PASSWORD}).json()[
            "access_token"
        ]
        for _ in range(3):
            assert raw_text_frame(server.port, "/ws/rooms/general", token, b"\xc3\x28") == 1007
    finally:
        assert server.stop()
    lines = server.log_path.read_text().splitlines()
    warnings = [line for line in lines if "Invalid UTF-8 sequence received from client" in line]
    assert len(warnings) == 3 and all("WARNING" in line for line in warnings), warnings
    assert not any(line.startswith("Traceback") for line in lines)
    assert not any("ERROR" in line for line in lines)


def test_json_lines_parse_and_hold_no_secret(tmp_path: Path) -> None:
    """CHAT_LOG_FORMAT=json: every line `chat serve` writes, uvicorn's access and error lines
    and the app's own, is one JSON object, with credentials redacted as in text lines."""
    server = Process(tmp_path, {"CHAT_LOG_FORMAT": "json"})
    server.start()
    try:
        http = httpx.Client(base_url=server.url)
        name = unique()
        http.post("/api/auth/register", json={"username": name, "password": PASSWORD})
        token = http.post("/api/auth/token", data={"username": name, "password": PASSWORD}).json()[
            "access_token"
        ]
        http.get(f"/api/rooms?token={token}")
        with connect(f"ws://127.0.0.1:{server.port}/ws/rooms/general?token={token}") as ws:
            ws.recv(timeout=5)
        # A warning of the app's own (chat.*) or uvicorn's: a frame that is not UTF-8.
        assert raw_text_frame(server.port, "/ws/rooms/general", token, b"\xc3\x28") == 1007
    finally:
        assert server.stop()
    logged = server.log_path.read_text()
    records = [json.loads(line) for line in logged.splitlines()]
    assert records and all(isinstance(r, dict) for r in records)
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        assert "color_message" not in record
    loggers = {r["logger"] for r in records}
    assert {"uvicorn.error", "uvicorn.access"} <= loggers, loggers
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    redacted = [r for r in access if r["path"] == "/api/rooms?token=[redacted]"]
    # REST takes no token in the URL: refused, and logged with it redacted.
    assert redacted and redacted[0]["status_code"] == 401 and redacted[0]["method"] == "GET"
    assert any("/ws/rooms/general?token=[redacted]" in r["message"] for r in records)
    warnings = [r for r in records if "Invalid UTF-8" in r["message"]]
    assert warnings and all(r["level"] == "WARNING" for r in warnings)
    for secret in (token, PASSWORD, token.split(".")[2]):
        assert secret not in logged


def test_unknown_log_format_stops_start_up(tmp_path: Path) -> None:
    result = run_chat("serve", "--port", "0", data_dir=tmp_path, CHAT_LOG_FORMAT="xml")
    assert result.returncode == 2
    assert "CHAT_LOG_FORMAT" in assert_one_line_error(result)
