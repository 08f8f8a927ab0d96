"""A faithful local HTTP server of the HackAgent API calls a step tracker makes.

:class:`FakeHackAgentAPI` listens on a real loopback socket and answers the four calls
described in the project's ``hackagent-api.md``:

==========================  =========================================================
``POST /result/{id}/trace``  validates ``sequence`` (int), ``step_type`` (StepTypeEnum),
                             ``content`` (present); 201 with a ``Trace``
``PATCH /run/{id}``          ``status`` must be a StatusEnum value; 200 with a ``Run``
``PATCH /result/{id}``       ``evaluation_status`` valid if present; 200 with a ``Result``
``POST /run/{id}/result``    ``run`` must be a UUID; 201 with a ``Result``
==========================  =========================================================

Like the real service it answers 401 without ``Authorization: Bearer <api_key>``, 404
for malformed UUIDs and unknown paths, 405 for a known path with another method and 400
for invalid JSON or invalid fields. Unknown run and result ids are created on first use
(the real backend knows them from elsewhere). Every call is recorded, faulted or not, in
:attr:`FakeHackAgentAPI.calls`.

Faults are programmable while the server runs (:meth:`FakeHackAgentAPI.inject`):
error statuses with or without ``Retry-After``, added latency, hangs, connection resets
and malformed success responses; :meth:`~FakeHackAgentAPI.stop` and
:meth:`~FakeHackAgentAPI.start` take the whole API down (connection refused) and bring
it back on the same port.

Example::

    from hackagent_otel.testing import Fault, FakeHackAgentAPI

    with FakeHackAgentAPI(api_key="k") as api:
        api.inject(Fault.status(503, retry_after=1), times=2)
        ...  # point the code under test at api.base_url with api key "k"
        assert api.wait_for(lambda: len(api.traces_for(result_id)) == 4, timeout=5)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

__all__ = [
    "EVALUATION_STATUS_VALUES",
    "RUN_STATUS_VALUES",
    "STEP_TYPE_VALUES",
    "FakeHackAgentAPI",
    "Fault",
    "ReceivedCall",
]

#: ``StepTypeEnum`` values a trace's ``step_type`` may take.
STEP_TYPE_VALUES = frozenset(
    {
        "OTHER",
        "TOOL_CALL",
        "TOOL_RESPONSE",
        "AGENT_THOUGHT",
        "AGENT_RESPONSE_CHUNK",
        "MCP_STEP",
        "A2A_COMM",
    }
)
#: ``StatusEnum`` values a run's ``status`` may take.
RUN_STATUS_VALUES = frozenset({"PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"})
#: ``EvaluationStatusEnum`` values a result's ``evaluation_status`` may take.
EVALUATION_STATUS_VALUES = frozenset(
    {
        "NOT_EVALUATED",
        "SUCCESSFUL_JAILBREAK",
        "FAILED_JAILBREAK",
        "PASSED_CRITERIA",
        "FAILED_CRITERIA",
        "ERROR_TEST_FRAMEWORK",
        "ERROR_AGENT_RESPONSE",
    }
)

_UUID = r"([^/]+)"
_ROUTES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(rf"^/result/{_UUID}/trace/?$"), "POST", "create_trace"),
    (re.compile(rf"^/run/{_UUID}/result/?$"), "POST", "create_result"),
    (re.compile(rf"^/run/{_UUID}/?$"), "PATCH", "update_run"),
    (re.compile(rf"^/result/{_UUID}/?$"), "PATCH", "update_result"),
]
_CONTROL_PATH = "/_fake/stats"
_CONTROL_CALLS_PATH = "/_fake/calls"
_UNIQUE_MESSAGE = "The fields result, sequence must make a unique set."

FaultKind = Literal["status", "latency", "hang", "reset", "malformed"]


@dataclass(frozen=True)
class Fault:
    """One misbehaviour of the API; build it with the class methods.

    ``status``: answer with that HTTP status (and ``Retry-After`` if given) instead of
    processing the call. ``latency``: wait ``latency_ms`` and then process normally.
    ``hang``: never answer; the connection is closed without a response once
    ``hang_until`` (a :func:`time.monotonic` deadline) passes or
    :meth:`FakeHackAgentAPI.release` is called. ``reset``: read the request, then abort
    the connection with a TCP RST. ``malformed``: process the call normally but answer
    the success status with broken JSON (``"json"``) or with a non-JSON content type
    (``"content_type"``).
    """

    kind: FaultKind
    status_code: int | None = None
    retry_after: str | None = None
    latency_ms: float = 0.0
    hang_until: float | None = None
    malformed: Literal["json", "content_type"] | None = None

    @classmethod
    def status(cls, code: int, *, retry_after: float | datetime | str | None = None) -> Fault:
        """Answer ``code``; ``retry_after`` as seconds, an aware datetime or raw text."""
        if isinstance(retry_after, datetime):
            text: str | None = format_datetime(retry_after.astimezone(timezone.utc), usegmt=True)
        elif isinstance(retry_after, (int, float)):
            text = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
        else:
            text = retry_after
        return cls("status", status_code=code, retry_after=text)

    @classmethod
    def latency(cls, ms: float) -> Fault:
        """Wait ``ms`` milliseconds, then answer normally."""
        return cls("latency", latency_ms=ms)

    @classmethod
    def hang(cls, *, seconds: float | None = None) -> Fault:
        """Never answer; close without a response after ``seconds`` or on release."""
        until = None if seconds is None else time.monotonic() + seconds
        return cls("hang", hang_until=until)

    @classmethod
    def reset(cls) -> Fault:
        """Read the request, then reset the connection (RST, no response)."""
        return cls("reset")

    @classmethod
    def malformed_response(cls, how: Literal["json", "content_type"] = "json") -> Fault:
        """Process the call, then answer success with a broken body or content type."""
        return cls("malformed", malformed=how)


@dataclass(frozen=True)
class ReceivedCall:
    """One request the fake API received.

    ``body`` is the parsed JSON (``None`` for an empty body, the raw text when it was
    not JSON); ``headers`` has lower-case names. ``status`` is the status answered, or
    ``None`` when no answer was sent (hang, reset). A call is recorded once its answer is
    decided; a hung call is recorded as soon as it starts hanging. ``fault`` names the
    injected fault that shaped the answer, if any.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float
    status: int | None
    fault: FaultKind | None = None

    @property
    def faulted(self) -> bool:
        """True when an injected fault shaped this call's answer."""
        return self.fault is not None


@dataclass
class _Injection:
    fault: Fault
    remaining: int | None
    path_prefix: str | None
    method: str | None

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], api: FakeHackAgentAPI) -> None:
        self.api = api
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.api._track_connection(request, add=True)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.api._track_connection(request, add=False)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler with a lean header reader.

    ``http.server`` parses headers with the e-mail parser, which costs more than the
    rest of a call; tests that run the fake next to the code under test share one
    interpreter, so the fake reads the request line and headers itself.
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server
    header_map: dict[str, str]

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read ``api.calls``, not stderr."""

    def handle_one_request(self) -> None:
        try:
            line = self.rfile.readline(65537)
            if not line:
                self.close_connection = True
                return
            parts = line.decode("latin-1").split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                self.close_connection = True
                return
            self.command, self.path, self.request_version = parts
            headers: dict[str, str] = {}
            while True:
                raw = self.rfile.readline(65537)
                if raw in (b"\r\n", b"\n", b""):
                    break
                name, _, value = raw.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            self.header_map = headers
            connection = headers.get("connection", "").lower()
            self.close_connection = connection == "close" or (
                self.request_version == "HTTP/1.0" and connection != "keep-alive"
            )
            self.server.api._handle(self)
        except (TimeoutError, ConnectionError):
            self.close_connection = True


class FakeHackAgentAPI:
    """A local HackAgent API on ``127.0.0.1`` for tests (yours too).

    Use it as a context manager, or call :meth:`start` and :meth:`close`. ``port=0``
    picks a free port; the port is kept across :meth:`stop`/:meth:`start`.
    ``unique_sequences=True`` makes a second trace with the same ``(result, sequence)``
    a 400, like the real backend's unique constraint; by default it is accepted and
    listed in :meth:`duplicate_traces`. ``control_endpoints=True`` adds
    ``GET /_fake/stats`` (call and trace counts as JSON) and ``GET /_fake/calls`` (each
    call's method, path, status, sequence and arrival time), for a fake running in
    another process (``python -m hackagent_otel.testing``).
    """

    def __init__(
        self,
        api_key: str = "test-key",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unique_sequences: bool = False,
        control_endpoints: bool = False,
    ) -> None:
        self.api_key = api_key
        self.unique_sequences = unique_sequences
        self.control_endpoints = control_endpoints
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._calls: list[ReceivedCall] = []
        self._traces: list[dict[str, Any]] = []
        self._trace_keys: set[tuple[str, int]] = set()
        self._duplicates: list[dict[str, Any]] = []
        self._runs: dict[str, dict[str, Any]] = {}
        self._results: dict[str, dict[str, Any]] = {}
        self._injections: list[_Injection] = []
        self._latency_s = 0.0
        self._release = threading.Event()
        self._ids = itertools.count(1)
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> FakeHackAgentAPI:
        """Listen (again) and serve from a background thread; a no-op when running."""
        with self._lock:
            if self._server is not None:
                return self
            server = _Server((self._host, self._port), self)
            self._port = server.server_address[1]
            self._release = threading.Event()
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fake-hackagent-api:{self._port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Take the API down: refuse new connections and cut the open ones."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            connections = list(self._connections)
            self._connections.clear()
            self._release.set()
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)

    close = stop

    def __enter__(self) -> FakeHackAgentAPI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the API accepts connections."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The port; fixed after the first :meth:`start`."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, without a trailing slash."""
        return f"http://{self._host}:{self._port}"

    # -- faults ------------------------------------------------------------------------
    def inject(
        self,
        fault: Fault,
        *,
        times: int | None = 1,
        path_prefix: str | None = None,
        method: str | None = None,
    ) -> None:
        """Apply ``fault`` to the next ``times`` matching calls (``None``: until cleared).

        Injections are matched in the order they were added; each call consumes at
        most one. ``path_prefix`` and ``method`` narrow which calls match.
        """
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            self._injections.append(_Injection(fault, times, path_prefix, method))

    def clear_faults(self) -> None:
        """Forget pending injections and the global latency; release hung calls."""
        with self._lock:
            self._injections.clear()
            self._latency_s = 0.0
        self.release()

    def set_latency(self, ms: float) -> None:
        """Delay every call by ``ms`` milliseconds (0 to stop)."""
        with self._lock:
            self._latency_s = max(0.0, ms) / 1000.0

    def release(self) -> None:
        """End every current hang (their connections close without an answer)."""
        with self._lock:
            event = self._release
            self._release = threading.Event()
        event.set()

    # -- what was received -------------------------------------------------------------
    @property
    def calls(self) -> list[ReceivedCall]:
        """A snapshot of every call received so far, in arrival order."""
        with self._lock:
            return list(self._calls)

    def traces_for(self, result_id: str) -> list[dict[str, Any]]:
        """Traces accepted for ``result_id``, in arrival order (as the API returned them)."""
        with self._lock:
            return [dict(t) for t in self._traces if t["result"] == result_id]

    @property
    def traces(self) -> list[dict[str, Any]]:
        """Every accepted trace, in arrival order."""
        with self._lock:
            return [dict(t) for t in self._traces]

    def duplicate_traces(self) -> list[dict[str, Any]]:
        """Traces whose ``(result, sequence)`` had been seen before (accepted or not)."""
        with self._lock:
            return [dict(t) for t in self._duplicates]

    def run(self, run_id: str) -> dict[str, Any] | None:
        """The run as last updated, or ``None`` if never seen."""
        with self._lock:
            found = self._runs.get(run_id)
            return None if found is None else dict(found)

    def result(self, result_id: str) -> dict[str, Any] | None:
        """The result as last updated or created, or ``None`` if never seen."""
        with self._lock:
            found = self._results.get(result_id)
            return None if found is None else dict(found)

    def reset(self) -> None:
        """Forget every call and stored object (faults stay)."""
        with self._lock:
            self._calls.clear()
            self._traces.clear()
            self._trace_keys.clear()
            self._duplicates.clear()
            self._runs.clear()
            self._results.clear()

    def wait_for(self, condition: int | Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``condition`` holds; False if ``timeout`` seconds pass first.

        An int means "at least that many calls received"; a callable is re-checked
        after every received call (and at least every 50 ms).
        """
        deadline = time.monotonic() + timeout
        if isinstance(condition, int):
            count = condition

            def check() -> bool:
                return len(self._calls) >= count
        else:
            check = condition
        while True:
            if check():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:
                self._changed.wait(min(remaining, 0.05))

    # -- serving -----------------------------------------------------------------------
    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for i, inj in enumerate(self._injections):
                if inj.matches(method, path):
                    if inj.remaining is not None:
                        inj.remaining -= 1
                        if inj.remaining == 0:
                            del self._injections[i]
                    return inj.fault
        return None

    def _record(self, call: ReceivedCall) -> None:
        with self._changed:
            self._calls.append(call)
            self._changed.notify_all()

    def _handle(self, h: _Handler) -> None:
        received_at = time.time()
        method, path = h.command, h.path.split("?", 1)[0]
        headers = h.header_map
        length = int(headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length > 0 else b""
        body, body_ok = _parse_json(raw)

        def record(status: int | None, fault: FaultKind | None = None) -> None:
            self._record(ReceivedCall(method, path, headers, body, received_at, status, fault))

        fault = self._take_fault(method, path)
        latency = self._latency_s + (fault.latency_ms / 1000.0 if fault else 0.0)
        if latency > 0:
            time.sleep(latency)

        if fault is not None and fault.kind == "hang":
            record(None, "hang")  # visible while it hangs, so tests can wait for it
            self._hang(fault)
            h.close_connection = True
            return
        if fault is not None and fault.kind == "reset":
            record(None, "reset")
            _abort(h)
            return
        if fault is not None and fault.kind == "status" and fault.status_code is not None:
            reply = _error(fault.status_code, "injected fault")
            if fault.retry_after is not None:
                reply.headers["Retry-After"] = fault.retry_after
            record(reply.status, "status")
            self._send(h, reply)
            return

        reply = self._route(method, path, headers, body, body_ok)
        if self.control_endpoints and path.startswith("/_fake/"):
            self._send(h, reply)  # inspection is not part of the API's traffic
            return
        kind: FaultKind | None = "latency" if fault is not None else None
        if fault is not None and fault.kind == "malformed" and 200 <= reply.status < 300:
            kind = "malformed"
            if fault.malformed == "content_type":
                reply = _Reply(reply.status, b"<html><body>OK</body></html>", "text/html")
            else:
                reply = _Reply(reply.status, reply.body[: max(1, len(reply.body) // 2)])
        record(reply.status, kind)
        self._send(h, reply)

    def _hang(self, fault: Fault) -> None:
        with self._lock:
            event = self._release
        if fault.hang_until is None:
            event.wait()
        else:
            event.wait(max(0.0, fault.hang_until - time.monotonic()))

    def _send(self, h: _Handler, reply: _Reply) -> None:
        head = [
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
        ]
        head.extend(f"{k}: {v}" for k, v in reply.headers.items())
        if h.close_connection:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body
        with contextlib.suppress(OSError):
            h.wfile.write(data)

    def _route(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: Any,
        body_ok: bool,
    ) -> _Reply:
        if self.control_endpoints and path == _CONTROL_PATH and method == "GET":
            with self._lock:
                stats = {"calls": len(self._calls), "traces": len(self._traces)}
            return _Reply(200, _dumps(stats))
        if self.control_endpoints and path == _CONTROL_CALLS_PATH and method == "GET":
            with self._lock:
                calls = [
                    {
                        "method": c.method,
                        "path": c.path,
                        "status": c.status,
                        "received_at": c.received_at,
                        "sequence": c.body.get("sequence") if isinstance(c.body, dict) else None,
                    }
                    for c in self._calls
                ]
            return _Reply(200, _dumps(calls))
        for pattern, route_method, name in _ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            object_id = _uuid_or_none(match.group(1))
            if object_id is None:
                return _error(404, "Not found.")
            if headers.get("authorization") != f"Bearer {self.api_key}":
                return _error(401, "Authentication credentials were not provided or are invalid.")
            if method != route_method:
                return _error(405, f'Method "{method}" not allowed.')
            if not body_ok or not isinstance(body, dict):
                return _error(400, "JSON parse error: a JSON object body is required.")
            handler: Callable[[str, dict[str, Any]], _Reply] = getattr(self, f"_{name}")
            return handler(object_id, body)
        return _error(404, "Not found.")

    # -- the four calls ----------------------------------------------------------------
    def _create_trace(self, result_id: str, body: dict[str, Any]) -> _Reply:
        errors: dict[str, list[str]] = {}
        sequence = body.get("sequence")
        if not isinstance(sequence, int) or isinstance(sequence, bool):
            errors["sequence"] = ["A valid integer is required."]
        if body.get("step_type") not in STEP_TYPE_VALUES:
            errors["step_type"] = [f'"{body.get("step_type")}" is not a valid choice.']
        if "content" not in body:
            errors["content"] = ["This field is required."]
        if errors:
            return _Reply(400, _dumps(errors))
        assert isinstance(sequence, int)
        with self._lock:
            trace = {
                "id": next(self._ids),
                "result": result_id,
                "sequence": sequence,
                "timestamp": _now_iso(),
                "step_type": body["step_type"],
                "content": body["content"],
            }
            key = (result_id, sequence)
            if key in self._trace_keys:
                self._duplicates.append(trace)
                if self.unique_sequences:
                    return _Reply(
                        400,
                        _dumps(
                            {
                                "non_field_errors": [
                                    "The fields result, sequence must make a unique set."
                                ]
                            }
                        ),
                    )
            self._trace_keys.add(key)
            self._traces.append(trace)
            self._results.setdefault(result_id, _new_result(result_id, None))
        return _Reply(201, _dumps(trace))

    def _update_run(self, run_id: str, body: dict[str, Any]) -> _Reply:
        if "status" in body and body["status"] not in RUN_STATUS_VALUES:
            return _Reply(400, _dumps({"status": [f'"{body["status"]}" is not a valid choice.']}))
        with self._lock:
            run = self._runs.setdefault(run_id, _new_run(run_id))
            for name in ("status", "run_notes", "run_config"):
                if name in body:
                    run[name] = body[name]
            run["updated_at"] = _now_iso()
            return _Reply(200, _dumps(run))

    def _update_result(self, result_id: str, body: dict[str, Any]) -> _Reply:
        status = body.get("evaluation_status")
        if "evaluation_status" in body and status not in EVALUATION_STATUS_VALUES:
            return _Reply(
                400, _dumps({"evaluation_status": [f'"{status}" is not a valid choice.']})
            )
        if "evaluation_notes" in body and body["evaluation_notes"] is None:
            return _Reply(400, _dumps({"evaluation_notes": ["This field may not be null."]}))
        with self._lock:
            result = self._results.setdefault(result_id, _new_result(result_id, None))
            result.update(body)
            result["id"] = result_id
            return _Reply(200, _dumps(result))

    def _create_result(self, run_id: str, body: dict[str, Any]) -> _Reply:
        run_field = body.get("run")
        run_uuid = _uuid_or_none(run_field) if isinstance(run_field, str) else None
        if run_uuid is None:
            return _Reply(400, _dumps({"run": ["A valid UUID is required."]}))
        status = body.get("evaluation_status")
        if "evaluation_status" in body and status not in EVALUATION_STATUS_VALUES:
            return _Reply(
                400, _dumps({"evaluation_status": [f'"{status}" is not a valid choice.']})
            )
        with self._lock:
            result_id = str(uuid.uuid4())
            result = _new_result(result_id, run_uuid)
            result.update({k: v for k, v in body.items() if k != "run"})
            self._results[result_id] = result
            self._runs.setdefault(run_id, _new_run(run_id))
            return _Reply(201, _dumps(result))


_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _error(status: int, detail: str) -> _Reply:
    return _Reply(status, _dumps({"detail": detail}))


def _parse_json(raw: bytes) -> tuple[Any, bool]:
    if not raw:
        return None, False
    try:
        return json.loads(raw), True
    except ValueError:
        return raw.decode("utf-8", "replace"), False


def _uuid_or_none(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _new_run(run_id: str) -> dict[str, Any]:
    return {"id": run_id, "status": "PENDING", "run_notes": None, "run_config": None}


def _new_result(result_id: str, run_id: str | None) -> dict[str, Any]:
    return {"id": result_id, "run": run_id, "evaluation_status": "NOT_EVALUATED"}


def _abort(h: _Handler) -> None:
    """Close the connection with an RST instead of a FIN."""
    h.close_connection = True
    conn: socket.socket = h.connection
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
