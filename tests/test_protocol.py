"""serving/protocol.py: each answer's head and body leave in one write, and no kind of response is held back."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from conftest import wait_for

from devservers.ports import free_port
from serving.protocol import CoalescingHttpToolsProtocol, CoalescingTransport


class FakeTransport:
    """Records what is written."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


@pytest.fixture
def coalescing() -> Iterator[tuple[FakeTransport, CoalescingTransport, asyncio.AbstractEventLoop]]:
    """A coalescing transport over a recording one, on a fresh event loop."""
    loop = asyncio.new_event_loop()
    raw = FakeTransport()
    try:
        yield raw, CoalescingTransport(raw, loop), loop
    finally:
        loop.close()


def test_head_and_body_go_out_in_one_write(coalescing) -> None:  # noqa: ANN001
    raw, t, loop = coalescing
    t.write(HEAD)
    assert raw.writes == []  # held until its body
    t.write(b"{}")
    assert raw.writes == [HEAD + b"{}"]
    loop.run_until_complete(asyncio.sleep(0))  # the scheduled flush finds nothing held
    assert raw.writes == [HEAD + b"{}"]


def test_a_head_without_a_body_is_flushed_at_the_end_of_the_turn(coalescing) -> None:  # noqa: ANN001
    raw, t, loop = coalescing
    t.write(HEAD)
    loop.run_until_complete(asyncio.sleep(0))
    assert raw.writes == [HEAD]
    t.write(b"not a head")  # other data passes straight through
    assert raw.writes == [HEAD, b"not a head"]
    t.write(HEAD)
    t.close()  # closing flushes first
    assert raw.writes == [HEAD, b"not a head", HEAD] and raw.closed
    assert t.get_extra_info("peername") == "info:peername"  # everything else is the transport's


async def app(scope, receive, send) -> None:  # noqa: ANN001
    """A tiny ASGI app: a JSON answer, a streamed answer, and the request body echoed."""
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"one,", "more_body": True})
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"two"})
        return
    payload = body or b'{"ok": true}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


@pytest.fixture
def server() -> Iterator[str]:
    """uvicorn with the coalescing protocol, in a thread, on a free loopback port."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=CoalescingHttpToolsProtocol,
                                        loop="asyncio", log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    assert wait_for(lambda: srv.started, timeout=20)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def test_real_server_answers_every_kind_of_response(server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as client:
        for _ in range(3):  # keep-alive: several answers on one connection
            r = client.get("/json")
            assert r.status_code == 200 and r.json() == {"ok": True}
        head = client.head("/json")  # uvicorn writes no body for HEAD: the held head must still go out
        assert head.status_code == 200 and head.headers["content-length"] == "12" and head.content == b""
        stream = client.get("/stream")  # chunked, with a pause between parts
        assert stream.status_code == 200 and stream.text == "one,two"
        echo = client.post("/echo", content=b"x" * 100_000, headers={"content-type": "application/json"})
        assert echo.status_code == 200 and echo.content == b"x" * 100_000


def test_real_server_answers_expect_100_continue(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue")  # flushed at the end of the turn, not held
        sock.sendall(b"{}")
        answer = b""
        while not answer.endswith(b"{}"):
            chunk = sock.recv(4096)
            assert chunk, "connection closed before the answer"
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK")
