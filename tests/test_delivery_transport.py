"""HackAgentClient against a loopback server scripted byte by byte.

The fake API (tests/test_delivery_client.py) shows records are delivered; here each test
plays one server behaviour over a real socket, allowed by HTTP/1.1 or broken: framing,
broken answers, the answer's size cap, the call's deadline against a server that
trickles, redirects (and where credentials may go), proxies, close and fork.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pytest

from hackagent_otel._delivery.client import MAX_REDIRECTS, HackAgentClient
from hackagent_otel._delivery.outcome import Delivered, Outcome, Rejected, Transient
from hackagent_otel._records import Request

KEY = "k"
Kind = Literal["own", "borrowed"]


@dataclass
class Received:
    """One request as the server read it, and the number of the connection it came on."""

    raw: bytes
    connection: int

    @property
    def request_line(self) -> bytes:
        return self.raw.split(b"\r\n", 1)[0]

    @property
    def headers(self) -> dict[str, str]:
        lines = self.raw.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]
        pairs = (line.decode("latin-1").split(":", 1) for line in lines)
        return {name.strip().lower(): value.strip() for name, value in pairs}

    @property
    def body(self) -> bytes:
        return self.raw.partition(b"\r\n\r\n")[2]


Reply = Callable[["ScriptedServer", socket.socket, Received], bool]
"""Answers one request on its connection; False closes the connection."""


@dataclass
class ScriptedServer:
    """Accepts connections on loopback and answers every request on them with ``reply``."""

    reply: Reply
    host: str = "127.0.0.1"
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._listener = socket.create_server((self.host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.origin}/api"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            args = (conn, self.connections)
            threading.Thread(target=self._serve, args=args, daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        with conn:
            buffered = b""
            while True:
                try:
                    while b"\r\n\r\n" not in buffered:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buffered += data
                    head, _, rest = buffered.partition(b"\r\n\r\n")
                    length = next(
                        (
                            int(line.split(b":")[1])
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length")
                        ),
                        0,
                    )
                    while len(rest) < length:
                        rest += conn.recv(65536)
                    received = Received(head + b"\r\n\r\n" + rest[:length], number)
                    buffered = rest[length:]
                    self.requests.append(received)
                    if not self.reply(self, conn, received):
                        return
                except OSError:
                    return

    def close(self) -> None:
        """Stop accepting: ``shutdown`` wakes the thread blocked in ``accept`` (closing
        the socket alone would leave it there, with its descriptor, until exit)."""
        self.stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._acceptor.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    """Start scripted servers; all are closed (and their trickles stopped) afterwards."""
    servers: list[ScriptedServer] = []

    def start(reply: Reply, host: str = "127.0.0.1") -> ScriptedServer:
        servers.append(ScriptedServer(reply, host))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def connect() -> Iterator[Callable[..., HackAgentClient]]:
    """Make a HackAgentClient for a server, ours or on a caller's httpx.Client; closes all."""
    opened: list[HackAgentClient | httpx.Client] = []

    def make(url: str, kind: Kind = "own", **options: Any) -> HackAgentClient:
        timeout = options.pop("timeout", 2.0)
        if kind == "own":
            client = HackAgentClient(url, KEY, timeout=timeout, **options)
        else:
            follow = options.pop("follow_redirects", False)
            headers = {"Authorization": f"Bearer {KEY}", **options.pop("headers", {})}
            http = httpx.Client(
                base_url=url, headers=headers, timeout=timeout, follow_redirects=follow
            )
            opened.append(http)
            client = HackAgentClient.from_httpx(http, **options)
        opened.append(client)
        return client

    yield make
    for thing in opened:
        thing.close()


KINDS = pytest.mark.parametrize("kind", ["own", "borrowed"])


def answer(raw: bytes, keep_open: bool = True) -> Reply:
    def reply(server: ScriptedServer, conn: socket.socket, request: Received) -> bool:
        conn.sendall(raw)
        return keep_open

    return reply


def trickle(raw: bytes, every: float = 0.05, *, after: bytes = b"") -> Reply:
    """Send ``after`` at once, then ``raw`` one byte at a time, ``every`` seconds apart
    (well under any read timeout)."""

    def reply(server: ScriptedServer, conn: socket.socket, request: Received) -> bool:
        conn.sendall(after)
        for i in range(len(raw)):
            if server.stopping.wait(every):
                return False
            conn.sendall(raw[i : i + 1])
        return True

    return reply


def stall(seconds: float) -> Reply:
    def reply(server: ScriptedServer, conn: socket.socket, request: Received) -> bool:
        server.stopping.wait(seconds)
        return False

    return reply


def redirect(status: int, location: str) -> Reply:
    return answer(
        f"HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
    )


def post(path: str = "result/r/trace", body: bytes = b'{"a":1}') -> Request:
    return Request("POST", path, body)


def timed(client: HackAgentClient, request: Request) -> tuple[Outcome, float]:
    started = time.monotonic()
    outcome = client.send(request)
    return outcome, time.monotonic() - started


OK_JSON = (
    b'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{"id":1}'
)

# -- framing -----------------------------------------------------------------------------


def test_a_call_goes_out_whole_and_its_connection_is_kept_alive(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient]
) -> None:
    server = serve(answer(OK_JSON))
    client = connect(server.url)

    first = client.send(post(body=b'{"a":1}'))
    second = client.send(Request("PATCH", "/run/x", b"{}"))

    assert first == Delivered(201, {"id": 1})
    assert second == Delivered(201, {"id": 1})
    assert server.connections == 1
    call = server.requests[0]
    assert call.request_line == b"POST /api/result/r/trace HTTP/1.1"
    assert call.body == b'{"a":1}'
    assert call.headers["authorization"] == f"Bearer {KEY}"
    assert call.headers["content-type"] == "application/json"
    assert call.headers["accept-encoding"] == "identity"
    assert call.headers["content-length"] == "7"
    assert server.requests[1].request_line == b"PATCH /api/run/x HTTP/1.1"


def test_a_chunked_answer_with_extensions_and_trailers_is_read_whole(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient]
) -> None:
    raw = (
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b'4;ext=1\r\n{"id\r\n4\r\n":1}\r\n0\r\nX-Trailer: t\r\n\r\n'
    )
    server = serve(answer(raw))
    client = connect(server.url)

    assert client.send(post()) == Delivered(201, {"id": 1})
    assert client.send(post()) == Delivered(201, {"id": 1})  # framing left the stream clean
    assert server.connections == 1


def test_interim_answers_are_skipped(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient]
) -> None:
    server = serve(answer(b"HTTP/1.1 100 Continue\r\n\r\n" + OK_JSON))

    assert connect(server.url).send(post()) == Delivered(201, {"id": 1})


def test_a_repeated_retry_after_keeps_its_last_value(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient]
) -> None:
    raw = b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nRetry-After:  7 \r\nContent-Length: 0\r\n\r\n"

    assert connect(serve(answer(raw)).url).send(post()) == Transient("HTTP 503", 7.0, 503)


@pytest.mark.parametrize(
    ("raw", "keep_open"),
    [
        # The server keeps the socket open after saying it will close: only the
        # client's own reading of the answer keeps it from being reused.
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
def test_a_connection_whose_next_bytes_are_in_doubt_is_not_reused(
    serve: Callable[..., ScriptedServer],
    connect: Callable[..., HackAgentClient],
    raw: bytes,
    keep_open: bool,
) -> None:
    server = serve(answer(raw, keep_open=keep_open))
    client = connect(server.url)

    first, second = client.send(post()), client.send(post())

    assert isinstance(first, Delivered)
    assert first == second
    assert server.connections == 2


def test_a_connection_closed_by_the_server_while_idle_is_replaced(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient]
) -> None:
    server = serve(answer(OK_JSON, keep_open=False))  # closes without saying so
    client = connect(server.url)

    assert isinstance(client.send(post()), Delivered)
    time.sleep(0.05)
    assert isinstance(client.send(post()), Delivered)
    assert server.connections == 2


# -- broken answers ------------------------------------------------------------------------

#: Breakages that only show at the end of the stream: the server closes it after them.
_CLOSES = {"closed-inside-headers", "closed-without-answer", "chunk-without-crlf", "cut-short"}


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"y" * 200_000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: a\r\n",
        b"",
    ],
    ids=[
        "http-2",
        "four-digit-status",
        "non-numeric-status",
        "header-without-colon",
        "negative-length",
        "non-numeric-length",
        "unsupported-transfer-coding",
        "header-block-too-long",
        "closed-inside-headers",
        "closed-without-answer",
    ],
)
@KINDS
def test_a_broken_answer_head_is_transient_and_its_connection_dropped(
    serve: Callable[..., ScriptedServer],
    connect: Callable[..., HackAgentClient],
    raw: bytes,
    kind: Kind,
    request: pytest.FixtureRequest,
) -> None:
    closes = request.node.callspec.id.split("-", 1)[1] in _CLOSES
    server = serve(answer(raw, keep_open=not closes))
    client = connect(server.url, kind)

    assert isinstance(client.send(post()), Transient)
    assert isinstance(client.send(post()), Transient)
    assert server.connections == 2  # never read from a broken stream again


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX",
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{}",
    ],
    ids=["bad-chunk-size", "chunk-without-crlf", "cut-short"],
)
@KINDS
def test_a_2xx_whose_body_breaks_is_still_delivered_without_a_body(
    serve: Callable[..., ScriptedServer],
    connect: Callable[..., HackAgentClient],
    raw: bytes,
    kind: Kind,
    request: pytest.FixtureRequest,
) -> None:
    # The API took the record when it said 201; retrying would only duplicate it.
    closes = request.node.callspec.id.split("-", 1)[1] in _CLOSES
    server = serve(answer(raw, keep_open=not closes))
    client = connect(server.url, kind)

    assert client.send(post()) == Delivered(201, None)
    assert client.send(post()) == Delivered(201, None)
    assert server.connections == 2


def test_a_4xx_whose_body_breaks_is_rejected_with_what_was_read(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient]
) -> None:
    raw = b'HTTP/1.1 400 Bad Request\r\nContent-Length: 40\r\n\r\n{"sequence": ["bad"]'
    outcome = connect(serve(answer(raw, keep_open=False)).url).send(post())

    assert isinstance(outcome, Rejected)
    assert outcome.status == 400
    assert outcome.reason.startswith('HTTP 400: {"sequence": ["bad"] [answer cut short')


# -- the answer's size cap ---------------------------------------------------------------------

_BIG = b'{"id":1,"pad":"' + b"x" * 200 + b'"}'


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(_BIG), _BIG),
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(_BIG), _BIG),
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\r\n%s" % _BIG,
    ],
    ids=["content-length", "chunked", "until-close"],
)
@KINDS
def test_a_2xx_answer_over_the_cap_is_delivered_without_its_body_in_every_framing(
    serve: Callable[..., ScriptedServer],
    connect: Callable[..., HackAgentClient],
    raw: bytes,
    kind: Kind,
) -> None:
    # The API took the record; the body is not read past the cap, so it is not parsed.
    server = serve(answer(raw, keep_open=b"Content-Length" in raw or b"chunked" in raw))
    client = connect(server.url, kind, max_answer_bytes=64)

    assert client.send(post()) == Delivered(201, None)
    assert client.send(post()) == Delivered(201, None)
    assert server.connections == 2  # the unread rest is never taken for the next answer


def test_an_announced_length_over_the_cap_is_not_waited_for(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient]
) -> None:
    server = serve(answer(b"HTTP/1.1 201 Created\r\nContent-Length: 99999999999\r\n\r\n{"))

    outcome, took = timed(connect(server.url, deadline=5.0), post())

    assert outcome == Delivered(201, None)
    assert took < 1.0


@KINDS
def test_a_4xx_answer_over_the_cap_gives_a_truncated_reason(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient], kind: Kind
) -> None:
    detail = b"why " * 5_000
    raw = b"HTTP/1.1 422 Unprocessable\r\nContent-Length: %d\r\n\r\n%s" % (len(detail), detail)
    client = connect(serve(answer(raw)).url, kind, max_answer_bytes=1_000)

    outcome = client.send(post())

    assert isinstance(outcome, Rejected)
    assert outcome.status == 422
    assert outcome.reason.startswith("HTTP 422: why why")
    assert "over 1000 bytes" in outcome.reason
    assert len(outcome.reason) < 700


def test_an_answer_in_a_coding_not_asked_for_is_not_read(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient]
) -> None:
    raw = (
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: 4\r\n\r\n\x1f\x8b\x08\x00"
    )

    assert connect(serve(answer(raw)).url).send(post()) == Delivered(201, None)


# -- the deadline ----------------------------------------------------------------------------

DEADLINE = 0.5
#: What a loaded 2-core machine may add past the deadline before the call returns.
MARGIN = 0.5


def test_a_server_trickling_its_headers_is_cut_off_at_the_deadline(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient]
) -> None:
    head = b"HTTP/1.1 201 Created\r\n" + b"X-Slow: " + b"z" * 400 + b"\r\nContent-Length: 0\r\n\r\n"
    client = connect(serve(trickle(head)).url, timeout=1.0, deadline=DEADLINE)

    outcome, took = timed(client, post())

    assert isinstance(outcome, Transient)
    assert "deadline" in outcome.reason
    assert DEADLINE - 0.05 < took < DEADLINE + MARGIN


@KINDS
def test_a_server_trickling_a_2xx_body_is_cut_off_at_the_deadline_and_delivered(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient], kind: Kind
) -> None:
    body = b'{"id":1,"pad":"' + b"x" * 400 + b'"}'
    head = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
    raw = head + b"Content-Length: %d\r\n\r\n" % len(body)
    server = serve(trickle(body, after=raw))
    client = connect(server.url, kind, timeout=1.0, deadline=DEADLINE)

    outcome, took = timed(client, post())

    assert outcome == Delivered(201, None)
    assert took < DEADLINE + MARGIN


def test_endless_interim_answers_end_at_the_deadline(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient]
) -> None:
    server = serve(trickle(b"HTTP/1.1 100 Continue\r\n\r\n" * 1000, every=0.001))
    client = connect(server.url, timeout=1.0, deadline=DEADLINE)

    outcome, took = timed(client, post())

    assert isinstance(outcome, Transient)
    assert took < DEADLINE + MARGIN


def test_close_wakes_a_call_blocked_on_a_hung_server(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient]
) -> None:
    server = serve(stall(30))
    client = connect(server.url, timeout=30.0)
    outcomes: list[Outcome] = []
    caller = threading.Thread(target=lambda: outcomes.append(client.send(post())))
    caller.start()
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)

    started = time.monotonic()
    client.close()
    caller.join(5)

    assert not caller.is_alive()
    assert time.monotonic() - started < 2
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], Transient)


# -- redirects ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_is_rejected_naming_it_and_never_followed(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient], status: int
) -> None:
    elsewhere = serve(answer(OK_JSON))
    location = f"{elsewhere.url}/result/r/trace"
    server = serve(redirect(status, location))

    outcome = connect(server.url).send(post())

    assert isinstance(outcome, Rejected)
    assert outcome.status == status
    assert location in outcome.reason
    assert elsewhere.requests == []
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_same_origin_redirect_that_may_change_the_method_is_rejected(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient], status: int
) -> None:
    server = serve(redirect(status, "/api/elsewhere"))

    outcome = connect(server.url).send(post())

    assert isinstance(outcome, Rejected)
    assert "/api/elsewhere" in outcome.reason
    assert len(server.requests) == 1


def _moved_once(status: int) -> Reply:
    """Redirect the first request to /api/moved (same origin), answer 201 there."""

    def reply(server: ScriptedServer, conn: socket.socket, request: Received) -> bool:
        if b" /api/moved " in request.request_line:
            return answer(OK_JSON)(server, conn, request)
        return redirect(status, "/api/moved")(server, conn, request)

    return reply


@pytest.mark.parametrize("status", [307, 308])
@KINDS
def test_a_same_origin_307_or_308_is_followed_with_its_method_body_and_credentials(
    serve: Callable[..., ScriptedServer],
    connect: Callable[..., HackAgentClient],
    status: int,
    kind: Kind,
) -> None:
    server = serve(_moved_once(status))

    outcome = connect(server.url, kind).send(post(body=b'{"n":2}'))

    assert outcome == Delivered(201, {"id": 1})
    first, moved = server.requests
    assert first.request_line == b"POST /api/result/r/trace HTTP/1.1"
    assert moved.request_line == b"POST /api/moved HTTP/1.1"
    assert moved.body == b'{"n":2}'
    assert moved.headers["authorization"] == f"Bearer {KEY}"


def test_same_origin_redirects_are_followed_a_few_times_at_most(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient]
) -> None:
    server = serve(redirect(307, "/api/again"))

    outcome = connect(server.url).send(post())

    assert isinstance(outcome, Rejected)
    assert outcome.status == 307
    assert len(server.requests) == MAX_REDIRECTS + 1


@pytest.mark.parametrize("status", [302, 307, 308])
@pytest.mark.parametrize("where", ["another-port", "another-host"])
def test_a_callers_client_that_follows_redirects_sends_no_credentials_elsewhere(
    serve: Callable[..., ScriptedServer],
    connect: Callable[..., HackAgentClient],
    status: int,
    where: str,
) -> None:
    elsewhere = serve(answer(OK_JSON))
    if where == "another-port":
        server = serve(redirect(status, f"{elsewhere.url}/result/r/trace"))
    else:  # the same port under another name: the same socket, were it followed
        server = serve(answer(OK_JSON))
        server.reply = redirect(status, f"http://localhost:{server.port}/api/result/r/trace")
    client = connect(
        server.url, "borrowed", follow_redirects=True, headers={"X-Team-Token": "secret"}
    )

    outcome = client.send(post())

    assert isinstance(outcome, Rejected)
    assert outcome.status == status
    assert len(server.requests) == 1
    assert elsewhere.requests == []
    assert server.requests[0].headers["x-team-token"] == "secret"  # sent where it belongs


# -- requests that cannot be sent as they are ------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "a\r\nX-Injected: 1"), ("POST", "a\x00b"), ("GET x", "a")],
    ids=["crlf-in-path", "nul-in-path", "space-in-method"],
)
def test_a_request_that_could_be_read_as_another_is_rejected_unsent(
    serve: Callable[..., ScriptedServer],
    connect: Callable[..., HackAgentClient],
    method: str,
    path: str,
) -> None:
    server = serve(answer(OK_JSON))

    outcome = connect(server.url).send(Request(method, path, b"{}"))

    assert isinstance(outcome, Rejected)
    assert outcome.status == 0
    assert server.requests == []


def test_a_path_with_spaces_or_non_ascii_goes_out_percent_encoded(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient]
) -> None:
    server = serve(answer(OK_JSON))

    connect(server.url).send(post("result/a b\u00e9/trace"))

    assert server.requests[0].request_line == b"POST /api/result/a%20b%C3%A9/trace HTTP/1.1"


def test_a_header_that_could_split_the_request_rejects_every_call_unsent(
    serve: Callable[..., ScriptedServer],
) -> None:
    server = serve(answer(OK_JSON))

    with HackAgentClient(server.url, "k\r\nX-Injected: 1") as client:
        outcome = client.send(post())

    assert isinstance(outcome, Rejected)
    assert outcome.status == 0
    assert server.requests == []


# -- proxies -----------------------------------------------------------------------------------


@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("http", "https", "all", "no"):
        monkeypatch.delenv(f"{name}_proxy", raising=False)
        monkeypatch.delenv(f"{name.upper()}_PROXY", raising=False)
    return monkeypatch


def test_an_environment_proxy_carries_our_calls_unless_no_proxy_exempts_the_host(
    serve: Callable[..., ScriptedServer],
    connect: Callable[..., HackAgentClient],
    no_proxies: pytest.MonkeyPatch,
) -> None:
    proxy = serve(answer(OK_JSON))
    api = serve(answer(OK_JSON))
    no_proxies.setenv("HTTP_PROXY", proxy.origin)

    assert isinstance(connect("http://api.invalid/api").send(post()), Delivered)
    no_proxies.setenv("NO_PROXY", "127.0.0.1")
    assert isinstance(connect(api.url).send(post()), Delivered)

    assert [r.request_line for r in proxy.requests] == [
        b"POST http://api.invalid/api/result/r/trace HTTP/1.1"
    ]
    assert len(api.requests) == 1


# -- fork --------------------------------------------------------------------------------------


def _in_a_child(work: Callable[[], bool]) -> int:
    """Run ``work`` in a forked child; its exit code (0 when ``work`` returned True)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            code = 0 if work() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@KINDS
def test_a_forked_child_calls_on_connections_of_its_own_and_leaves_the_parents_alone(
    serve: Callable[..., ScriptedServer], connect: Callable[..., HackAgentClient], kind: Kind
) -> None:
    server = serve(answer(OK_JSON))
    client = connect(server.url, kind)
    assert isinstance(client.send(post()), Delivered)

    def child() -> bool:
        delivered = isinstance(client.send(post()), Delivered)
        client.close()  # closes only what the child opened
        return delivered

    assert _in_a_child(child) == 0
    assert isinstance(client.send(post()), Delivered)

    assert [r.connection for r in server.requests] == [1, 2, 1]
    assert server.requests[1].headers["authorization"] == f"Bearer {KEY}"
