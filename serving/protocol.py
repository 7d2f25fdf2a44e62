"""uvicorn's httptools protocol, sending each response's head and body in one write.

uvicorn writes the status line and headers on `http.response.start` and the body on `http.response.body`: two
send() calls and two TCP segments per answer. For a small JSON answer the second system call (and the second
segment the client must read) is a measurable share of a request's CPU. `intelrouter serve` passes this protocol
to uvicorn (`http=`): a response head is held until the body write that follows it in the same event-loop turn,
then both go out in one write. Anything else is written as it comes, and a held head is flushed at the end of the
turn anyway (HEAD answers, `100 Continue`, streaming), so no write is ever delayed past the current turn.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_START = b"HTTP/1.1 "
HEAD_END = b"\r\n\r\n"


class CoalescingTransport:
    """Wraps a transport: a complete response head waits for the next write (or the end of this loop turn)."""

    __slots__ = ("transport", "loop", "held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport, self.loop = transport, loop
        self.held: bytes | None = None

    def write(self, data: bytes) -> None:
        """Write data, joined to a held response head; hold a new head until its body comes."""
        if self.held is not None:
            data, self.held = self.held + data, None
        elif data.startswith(HEAD_START) and data.endswith(HEAD_END):
            self.held = data
            self.loop.call_soon(self.flush)
            return
        self.transport.write(data)

    def flush(self) -> None:
        """Write a head still held (its body did not follow in the same turn)."""
        if self.held is not None:
            data, self.held = self.held, None
            if not self.transport.is_closing():
                self.transport.write(data)

    def close(self) -> None:
        """Flush, then close the transport."""
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose transport joins each response head to its body."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Wrap the connection's transport, then set up as usual."""
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
