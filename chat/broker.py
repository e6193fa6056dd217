"""Fan-out between server processes, behind one small interface chosen by URL.

`memory://` hands every published event straight to this process's handler;
a networked backend delivers it to every process subscribed to the broker.
"""

from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from chat.settings import SettingsError

Handler = Callable[[str, bytes], None]


class Broker(Protocol):
    async def connect(self, handler: Handler) -> None:
        """Start delivering every published (channel, payload) to `handler`."""

    async def disconnect(self) -> None: ...

    async def publish(self, channel: str, payload: bytes) -> None: ...

    async def is_healthy(self) -> bool: ...


class MemoryBroker:
    """One process: publishing is a direct call, with no copy and no task switch."""

    def __init__(self) -> None:
        self._handler: Handler | None = None

    async def connect(self, handler: Handler) -> None:
        self._handler = handler

    async def disconnect(self) -> None:
        self._handler = None

    async def publish(self, channel: str, payload: bytes) -> None:
        if self._handler is not None:
            self._handler(channel, payload)

    async def is_healthy(self) -> bool:
        return True


def create_broker(url: str) -> Broker:
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBroker()
    raise SettingsError(f"CHAT_BROKER_URL has an unsupported scheme: {url!r} (use memory://)")
