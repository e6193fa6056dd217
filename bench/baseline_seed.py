"""Baseline: the seed tutorial's naive chat, served the way the product is served.

The tutorial's `ConnectionManager` (a list of sockets per room, `await send_text` to
each in turn; no auth, no persistence, no backpressure handling), as a FastAPI app on
uvicorn with the product's uvicorn options. Every text frame received on
`/ws/{room}` is broadcast, unchanged, to the room's sockets, the sender included.

    python -m bench.baseline_seed --port 8001
"""

import argparse
from collections import defaultdict

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from chat.cli import uvicorn_options
from chat.logs import log_config
from chat.settings import Settings

app = FastAPI()


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: dict[str, list[WebSocket]] = defaultdict(list)

    async def connect(self, room: str, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections[room].append(websocket)

    def disconnect(self, room: str, websocket: WebSocket) -> None:
        self.active_connections[room].remove(websocket)

    async def broadcast(self, room: str, message: str) -> None:
        for connection in self.active_connections[room]:
            await connection.send_text(message)


manager = ConnectionManager()


@app.websocket("/ws/{room}")
async def websocket_endpoint(websocket: WebSocket, room: str) -> None:
    await manager.connect(room, websocket)
    try:
        while True:
            data = await websocket.receive_text()
            await manager.broadcast(room, data)
    except WebSocketDisconnect:
        manager.disconnect(room, websocket)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_seed")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=log_config(),
        # uvicorn's own WebSocket protocol: the product's (`chat.wsprotocol`) holds every
        # socket to the product's frame limits, which would close the seed's senders.
        **{**uvicorn_options(Settings()), "ws": "websockets-sansio"},
    )


if __name__ == "__main__":
    main()
