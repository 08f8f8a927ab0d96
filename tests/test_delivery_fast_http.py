"""StdlibHTTP: the lean HTTP/1.1 transport, against a loopback server scripted byte by byte.

The contract server (tests/test_delivery_client.py) shows it delivers records; here each
test plays one server behaviour HTTP/1.1 allows (or a broken one) over a real socket.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from hackagent_otel._delivery import fast_http
from hackagent_otel._delivery.fast_http import MAX_HEADERS, BadResponse, StdlibHTTP, UnsafeRequest

Reply = Callable[[socket.socket, bytes], bool]
"""Answers one request (its raw bytes) on the connection; False closes the connection."""


class ScriptedServer:
    """Accepts connections and answers every request on them with ``reply``."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/api"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buffered = b""
            while True:
                while b"\r\n\r\n" not in buffered:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffered += data
                head, _, rest = buffered.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                while len(rest) < length:
                    rest += conn.recv(65536)
                request, buffered = head + b"\r\n\r\n" + rest[:length], rest[length:]
                self.requests.append(request)
                if not self.reply(conn, request):
                    return

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Reply], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(reply: Reply) -> ScriptedServer:
        servers.append(ScriptedServer(reply))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def stall(seconds: float) -> Reply:
    def reply(conn: socket.socket, request: bytes) -> bool:
        time.sleep(seconds)
        return True

    return reply


def answer(raw: bytes, keep_open: bool = True) -> Reply:
    def reply(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(raw)
        return keep_open

    return reply


def transport(url: str, read_timeout: float = 5.0) -> StdlibHTTP:
    return StdlibHTTP(
        url, {"Authorization": "Bearer k"}, connect_timeout=5.0, read_timeout=read_timeout
    )


OK_JSON = (
    b'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{"id":1}'
)


def test_a_request_goes_out_whole_and_the_connection_is_kept_alive(
    serve: Callable[[Reply], ScriptedServer],
) -> None:
    server = serve(answer(OK_JSON))
    lean = transport(server.url)

    first = lean.request("POST", "/result/r/trace", b'{"a":1}')
    second = lean.request("PATCH", "run/x", b"{}")

    assert (first.status, first.content_type, first.body) == (201, "application/json", b'{"id":1}')
    assert second.status == 201
    assert server.connections == 1
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /api/result/r/trace HTTP/1.1"
    assert set(lines[1:]) == {
        f"Host: {server.url.split('/')[2]}".encode(),
        b"Authorization: Bearer k",
        b"Content-Length: 7",
        b"Accept-Encoding: identity",
    }
    assert body == b'{"a":1}'
    assert server.requests[1].startswith(b"PATCH /api/run/x HTTP/1.1\r\n")
    lean.close()


def test_a_chunked_body_with_extensions_and_trailers_is_joined(
    serve: Callable[[Reply], ScriptedServer],
) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    server = serve(answer(raw))
    lean = transport(server.url)

    assert lean.request("POST", "x", b"").body == b"Wikipedia"
    assert lean.request("POST", "x", b"").body == b"Wikipedia"  # framing left the stream clean
    assert server.connections == 1


def test_interim_responses_are_skipped(serve: Callable[[Reply], ScriptedServer]) -> None:
    server = serve(answer(b"HTTP/1.1 100 Continue\r\n\r\n" + OK_JSON))

    assert transport(server.url).request("POST", "x", b"").status == 201


def test_retry_after_is_read_and_repeated_headers_keep_the_last(
    serve: Callable[[Reply], ScriptedServer],
) -> None:
    raw = b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nRetry-After:  7 \r\nContent-Length: 0\r\n\r\n"
    response = transport(serve(answer(raw)).url).request("POST", "x", b"")

    assert (response.status, response.retry_after, response.body) == (503, "7", b"")


@pytest.mark.parametrize(
    ("raw", "keep_open"),
    [
        # The server keeps the socket open after saying it will close: only the
        # client's own reading of the response keeps it from being reused.
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.1 200 OK\r\n\r\nok", False),  # no length: the body ends with the connection
        # No body allowed, yet one is announced or sent: the stream is not trusted again.
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nok", True),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"
            b"2\r\nok\r\n0\r\n\r\n",
            True,
        ),
    ],
    ids=["connection-close", "http-1.0", "until-close", "204-with-length", "chunked-and-length"],
)
def test_a_connection_the_server_will_close_is_not_reused(
    serve: Callable[[Reply], ScriptedServer], raw: bytes, keep_open: bool
) -> None:
    server = serve(answer(raw, keep_open=keep_open))
    lean = transport(server.url)

    first = lean.request("POST", "x", b"")
    second = lean.request("POST", "x", b"")
    assert first.body == second.body
    assert first.body in (b"ok", b"")
    assert server.connections == 2


def test_http_1_0_with_keep_alive_is_reused(serve: Callable[[Reply], ScriptedServer]) -> None:
    raw = b"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n"
    server = serve(answer(raw))
    lean = transport(server.url)

    assert lean.request("POST", "x", b"").status == 204
    assert lean.request("POST", "x", b"").status == 204
    assert server.connections == 1


def test_a_connection_closed_by_the_server_while_idle_is_replaced(
    serve: Callable[[Reply], ScriptedServer],
) -> None:
    server = serve(answer(OK_JSON, keep_open=False))  # closes without saying so
    lean = transport(server.url)

    assert lean.request("POST", "x", b"").status == 201
    time.sleep(0.05)
    assert lean.request("POST", "x", b"").status == 201
    assert server.connections == 2


_SEEN_AT_END_OF_STREAM = {
    "chunk-without-crlf",
    "body-cut-short",
    "closed-inside-headers",
    "closed-without-answer",
}


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", BadResponse),
        (b"HTTP/1.1 2000 OK\r\n\r\n", BadResponse),
        (b"HTTP/1.1 abc OK\r\n\r\n", BadResponse),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", BadResponse),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", BadResponse),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", BadResponse),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", BadResponse),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX", BadResponse),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", http.client.IncompleteRead),
        (b"HTTP/1.1 200 OK\r\nContent-Type: a\r\n", BadResponse),
        (b"", http.client.RemoteDisconnected),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_HEADERS + 1) + b"\r\n", BadResponse),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000 + b"\r\n\r\n", BadResponse),
        (b"HTTP/1.1 200 OK\r\n Folded: y\r\n\r\n", BadResponse),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", BadResponse),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", BadResponse),
        (b"HTTP/1.1 100 Continue\r\n\r\n" * 101, BadResponse),
    ],
    ids=[
        "http-2",
        "four-digit-status",
        "non-numeric-status",
        "header-without-colon",
        "negative-length",
        "non-numeric-length",
        "bad-chunk-size",
        "chunk-without-crlf",
        "body-cut-short",
        "closed-inside-headers",
        "closed-without-answer",
        "too-many-headers",
        "header-line-too-long",
        "folded-header",
        "unsupported-transfer-encoding",
        "length-over-bound",
        "endless-interim-responses",
    ],
)
def test_a_broken_response_raises_and_the_connection_is_dropped(
    serve: Callable[[Reply], ScriptedServer],
    raw: bytes,
    error: type[Exception],
    request: pytest.FixtureRequest,
) -> None:
    needs_eof = request.node.callspec.id in _SEEN_AT_END_OF_STREAM
    # Where the breakage is only seen at the end of the stream, the server closes it.
    server = serve(answer(raw, keep_open=not needs_eof))
    lean = transport(server.url)

    with pytest.raises(error):
        lean.request("POST", "x", b"")
    with pytest.raises(error):
        lean.request("POST", "x", b"")
    assert server.connections == 2  # dropped by the client: never read from a broken stream


def test_errors_are_those_the_client_reports_as_transient() -> None:
    assert issubclass(BadResponse, http.client.HTTPException)


def test_a_read_past_the_timeout_raises_timeout_error(
    serve: Callable[[Reply], ScriptedServer],
) -> None:
    server = serve(stall(1))

    with pytest.raises(TimeoutError):
        transport(server.url, read_timeout=0.1).request("POST", "x", b"")


def test_close_wakes_a_request_blocked_on_a_hung_server(
    serve: Callable[[Reply], ScriptedServer],
) -> None:
    server = serve(stall(30))
    lean = transport(server.url, read_timeout=30)
    failures: list[BaseException] = []

    def call() -> None:
        try:
            lean.request("POST", "x", b"")
        except BaseException as exc:
            failures.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    lean.close()
    caller.join(5)

    assert not caller.is_alive()
    assert time.monotonic() - started < 2
    assert len(failures) == 1
    assert isinstance(failures[0], (OSError, http.client.HTTPException))


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "a b"), ("POST", "a\r\nX: y"), ("POST", "é"), ("POST", "a\x00"), ("GET x", "a")],
)
def test_unsafe_requests_are_refused_before_sending(
    serve: Callable[[Reply], ScriptedServer], method: str, path: str
) -> None:
    server = serve(answer(OK_JSON))

    with pytest.raises(UnsafeRequest, match="refusing"):
        transport(server.url).request(method, path, b"")
    assert server.requests == []


def test_bodies_over_the_bound_are_refused_in_every_framing(
    serve: Callable[[Reply], ScriptedServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast_http, "MAX_BODY", 4)
    for raw in (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ):
        with pytest.raises(BadResponse, match=r"out of bounds|over 4 bytes"):
            transport(serve(answer(raw)).url).request("POST", "x", b"")
    until_close = serve(answer(b"HTTP/1.1 200 OK\r\n\r\nhello", keep_open=False))
    with pytest.raises(BadResponse, match="over 4 bytes"):
        transport(until_close.url).request("POST", "x", b"")


@pytest.mark.parametrize(
    ("hostname", "port", "expected"),
    [
        ("api.example", None, "api.example"),
        ("api.example", 80, "api.example"),
        ("127.0.0.1", 8000, "127.0.0.1:8000"),
        ("::1", 8000, "[::1]:8000"),
        ("bücher.example", None, "xn--bcher-kva.example"),
    ],
)
def test_the_host_header_is_written_as_http_wants_it(
    hostname: str, port: int | None, expected: str
) -> None:
    assert fast_http._host_header(hostname, port) == expected


def test_headers_merge_without_regard_to_case(serve: Callable[[Reply], ScriptedServer]) -> None:
    server = serve(answer(OK_JSON))
    headers = {"host": "api.internal", "content-length": "999", "Accept-Encoding": "gzip"}
    lean = StdlibHTTP(server.url, headers, connect_timeout=5, read_timeout=5)

    lean.request("POST", "x", b"{}")

    lines = server.requests[0].partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    assert sorted(lines) == [b"Accept-Encoding: gzip", b"Content-Length: 2", b"host: api.internal"]


@pytest.mark.parametrize(
    "headers",
    [
        {"X": "a\r\nInjected: 1"},
        {"X\n": "a"},
        {"": "a"},
        {"A:B": "c"},
        {" X": "a"},
        {"X": "a\x00"},
        {"X": "€"},
    ],
    ids=[
        "crlf-in-value",
        "lf-in-name",
        "empty-name",
        "colon-in-name",
        "space-in-name",
        "nul-in-value",
        "not-latin-1",
    ],
)
def test_headers_that_could_split_the_request_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"cannot be sent|latin-1"):
        StdlibHTTP("http://127.0.0.1:9", headers, connect_timeout=1, read_timeout=1)


def test_only_plain_http_urls_are_served() -> None:
    with pytest.raises(ValueError, match="plain http"):
        StdlibHTTP("https://example.com", {}, connect_timeout=1, read_timeout=1)


def test_a_closed_transport_refuses_requests_without_connecting(
    serve: Callable[[Reply], ScriptedServer],
) -> None:
    server = serve(answer(OK_JSON))
    lean = transport(server.url)
    lean.request("POST", "x", b"")

    lean.close()

    with pytest.raises(ConnectionAbortedError, match="closed"):
        lean.request("POST", "x", b"")
    assert server.connections == 1
