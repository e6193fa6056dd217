"""Baseline: a bare `websockets` server that only relays a room's text frames.

No framework, auth, storage or JSON: each text frame received on `/ws/{room}` goes
to the room's sockets (the sender included) through `websockets.broadcast`, which
writes without waiting for slow readers. Compression off, as in the product.

    python -m bench.baseline_bare --port 8002
"""

import argparse
import asyncio
from collections import defaultdict

from websockets.asyncio.server import ServerConnection, broadcast, serve

rooms: dict[str, set[ServerConnection]] = defaultdict(set)


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path.split("?", 1)[0] if ws.request else ""
    room = path.removeprefix("/ws/")
    members = rooms[room]
    members.add(ws)
    try:
        async for message in ws:
            if isinstance(message, str):
                broadcast(members, message)
    finally:
        members.discard(ws)
        if not members:
            rooms.pop(room, None)


async def serve_forever(host: str, port: int) -> None:
    async with serve(handler, host, port, compression=None, max_size=64 * 1024) as server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_bare")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    try:
        from uvloop import new_event_loop  # uvicorn serves the product on uvloop too
    except ImportError:
        new_event_loop = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(serve_forever(args.host, args.port))


if __name__ == "__main__":
    main()
