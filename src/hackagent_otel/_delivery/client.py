"""HackAgentClient: makes a record's API call once, over httpx, and says how it went.

It turns every answer and every network failure into an :class:`Outcome` and never
raises for them. It can be built from this package's own settings, from a hackagent
``AuthenticatedClient`` (duck-typed: hackagent is never imported) or from an
``httpx.Client`` the caller already configured (used as is and never closed). Either
way the bytes move through one :class:`~hackagent_otel._delivery.transport.Transport`,
and :func:`outcome_of` is the one place where an answer becomes an outcome.

This module holds the delivery package's single OpenTelemetry import, in
:func:`suppress_instrumentation`: our own HTTP calls run with OTel instrumentation
suppressed, so an instrumented httpx never traces the exporter's calls (which could
otherwise feed back into the exporter in a loop).
"""

from __future__ import annotations

import contextlib

# The IDNA codec, which getaddrinfo looks up when a process makes its first connection,
# is imported now instead of lazily on a sender thread: a fork while a sender is in the
# middle of that import would give the child the module's import lock, held by a thread
# that does not exist there, and every connection the child tries would hang on it.
import encodings.idna  # noqa: F401
import hashlib
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from hackagent_otel._delivery.outcome import Delivered, Outcome, Rejected, Transient
from hackagent_otel._delivery.retry import classify_status, parse_retry_after
from hackagent_otel._delivery.transport import (
    MAX_ANSWER_BYTES,
    Answer,
    BorrowedTransport,
    OwnTransport,
    Transport,
    TransportError,
)
from hackagent_otel._records import Request

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_DEADLINE",
    "DEFAULT_TIMEOUT",
    "MAX_REDIRECTS",
    "HackAgentClient",
    "outcome_of",
    "suppress_instrumentation",
]

DEFAULT_BASE_URL = "https://api.hackagent.dev"
#: Read/write/pool timeout 10 s, connect 5 s: each phase of a call waits at most that.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: A whole call (connect, send, answer) ends within this many seconds, or within the
#: timeout's connect + read time when that is longer.
DEFAULT_DEADLINE = 15.0
#: Same-origin 307/308 redirects followed for one call; any other redirect is final.
MAX_REDIRECTS = 3
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_MAX_REASON = 500


@contextlib.contextmanager
def suppress_instrumentation() -> Iterator[None]:
    """Run the block with OpenTelemetry instrumentation suppressed.

    The single exception to "no OTel imports in delivery": it sets the context keys that
    ``opentelemetry-instrumentation`` checks (``is_instrumentation_enabled`` and
    ``is_http_instrumentation_enabled``; the httpx instrumentation consults both), using
    only ``opentelemetry-api``. Imported lazily so delivery loads without OTel.
    """
    try:
        from opentelemetry import context as otel_context
    except ImportError:  # pragma: no cover - opentelemetry-api is a dependency
        yield
        return
    ctx = otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
    ctx = otel_context.set_value(otel_context._SUPPRESS_HTTP_INSTRUMENTATION_KEY, True, ctx)
    # Older instrumentations look the flag up under its plain name.
    ctx = otel_context.set_value("suppress_instrumentation", True, ctx)
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


class HackAgentClient:
    """Makes HackAgent API calls for :class:`~hackagent_otel._records.Request` objects.

    ``base_url`` defaults to ``https://api.hackagent.dev``; record paths are relative to
    it with no extra prefix (a base URL with a path, such as ``https://host/api``, keeps
    that path). Thread-safe: the connection pool serves concurrent senders, one
    keep-alive connection each. Fork-safe: a child process never reuses the parent's
    connections (see :meth:`from_httpx` for what a borrowed client becomes there), and
    a call imports nothing lazily (a fork in the middle of an import on a sender thread
    would leave the child a module lock that no thread there ever releases).

    ``timeout`` bounds each phase of a call (connect, each write, each read, waiting for
    a pooled connection); ``deadline`` bounds the whole call, in seconds, so a server
    that trickles its answer cannot hold a sender longer (``None``: the longer of
    :data:`DEFAULT_DEADLINE` and the timeout's connect + read time). An answer's body is
    read up to ``max_answer_bytes``. Redirects are not followed, except a 307 or 308 to
    the same origin (scheme, host and port), up to :data:`MAX_REDIRECTS` times; any other
    is a rejection naming where it pointed.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        verify: Any = True,
        headers: Mapping[str, str] | None = None,
        auth_header_name: str = "Authorization",
        auth_prefix: str = "Bearer",
        max_connections: int = 32,
        deadline: float | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        merged: dict[str, str] = {**_JSON_HEADERS, **(headers or {})}
        if api_key:
            merged[auth_header_name] = f"{auth_prefix} {api_key}" if auth_prefix else api_key
        timeout = _as_timeout(timeout)
        self._settings: dict[str, Any] = {
            "base_url": _with_trailing_slash(base_url),
            "headers": merged,
            "timeout": timeout,
            "verify": verify,
            "max_connections": max_connections,
            "max_answer_bytes": max_answer_bytes,
        }
        self._transport: Transport = OwnTransport(**self._settings)
        self._owned = True
        self._deadline = _deadline_for(timeout, deadline)
        self._pid = os.getpid()
        self._closed = False

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_authenticated_client(cls, client: Any, **overrides: Any) -> HackAgentClient:
        """Build from a hackagent ``AuthenticatedClient`` (or anything shaped like one).

        Reads ``_base_url`` (or ``base_url``), ``token``, ``prefix`` (default
        ``"Bearer"``), ``auth_header_name`` (default ``"Authorization"``), ``_headers``,
        ``_timeout`` and ``_verify_ssl`` where present.
        """
        base_url = getattr(client, "_base_url", None) or getattr(client, "base_url", None)
        token = getattr(client, "token", None)
        if not isinstance(base_url, str) or not isinstance(token, str):
            raise TypeError(
                "an AuthenticatedClient-like object needs a str base URL (_base_url) and token"
            )
        prefix = getattr(client, "prefix", "Bearer")
        header_name = getattr(client, "auth_header_name", "Authorization")
        headers = getattr(client, "_headers", None)
        timeout = getattr(client, "_timeout", None)
        kwargs: dict[str, Any] = {
            "auth_prefix": prefix if isinstance(prefix, str) else "Bearer",
            "auth_header_name": header_name if isinstance(header_name, str) else "Authorization",
            "headers": dict(headers) if isinstance(headers, Mapping) else None,
            "verify": getattr(client, "_verify_ssl", True),
        }
        if isinstance(timeout, (int, float, httpx.Timeout)):
            kwargs["timeout"] = timeout
        kwargs.update(overrides)
        return cls(base_url, token, **kwargs)

    @classmethod
    def from_httpx(
        cls,
        client: httpx.Client,
        *,
        deadline: float | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> HackAgentClient:
        """Use a configured ``httpx.Client`` as is: its base URL, headers and auth apply.

        The client is never closed by us. It must have a ``base_url``. Our calls are
        sent with ``follow_redirects=False`` whatever the client's own setting, so its
        credentials never follow a redirect to another host. The deadline is kept less
        tightly than with our own client: each phase's timeout is cut to the time left
        when the call starts and the body is abandoned once it passes, but a server that
        trickles the answer's headers is bounded only by the client's read timeout.

        In a forked child a new client of our own is built from its base URL, headers,
        auth, cookies and timeout (a custom transport or TLS setting is not carried
        over), because the parent's pooled connections must not be shared.
        """
        if not isinstance(client, httpx.Client):
            raise TypeError(f"expected an httpx.Client, got {type(client).__name__}")
        if not str(client.base_url):
            raise ValueError("the httpx.Client needs a base_url (the HackAgent API's root)")
        self = cls.__new__(cls)
        self._settings = {
            "base_url": _with_trailing_slash(str(client.base_url)),
            "headers": {**_JSON_HEADERS, **dict(client.headers)},
            "auth": client.auth,
            "cookies": client.cookies,
            "timeout": client.timeout,
            "max_answer_bytes": max_answer_bytes,
        }
        self._transport = BorrowedTransport(client, max_answer_bytes=max_answer_bytes)
        self._owned = False
        self._deadline = _deadline_for(client.timeout, deadline)
        self._pid = os.getpid()
        self._closed = False
        return self

    @classmethod
    def from_any(cls, obj: Any) -> HackAgentClient:
        """A client from whatever the user passed as ``client=``.

        Accepts a :class:`HackAgentClient` (returned as is), an ``httpx.Client`` or a
        hackagent ``AuthenticatedClient``-like object; raises ``TypeError`` otherwise.
        """
        if isinstance(obj, HackAgentClient):
            return obj
        if isinstance(obj, httpx.Client):
            return cls.from_httpx(obj)
        if isinstance(obj, httpx.AsyncClient):
            raise TypeError(
                "an httpx.AsyncClient cannot be used: delivery runs on threads; pass an "
                "httpx.Client, a hackagent AuthenticatedClient or a HackAgentClient"
            )
        if hasattr(obj, "token") and (hasattr(obj, "_base_url") or hasattr(obj, "base_url")):
            return cls.from_authenticated_client(obj)
        raise TypeError(
            f"cannot make a HackAgent client from {type(obj).__name__}: pass a hackagent "
            "AuthenticatedClient, an httpx.Client or a hackagent_otel HackAgentClient"
        )

    # -- use ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The API root that record paths are relative to (with a trailing slash)."""
        return str(self._settings["base_url"])

    @property
    def headers(self) -> dict[str, str]:
        """A copy of the headers every call sends, ``Authorization`` included (so the
        caller can tell which values are credentials)."""
        return {str(k): str(v) for k, v in self._settings["headers"].items()}

    @property
    def target(self) -> tuple[str, str]:
        """Where and as whom calls go: the base URL and a digest of the headers (auth).

        Two clients with the same target deliver the same way, so they can share one
        delivery service (and its order per result).
        """
        headers = sorted((str(k).lower(), str(v)) for k, v in self._settings["headers"].items())
        auth = self._settings.get("auth")
        digest = hashlib.sha256(repr((headers, id(auth) if auth else None)).encode())
        return self.base_url, digest.hexdigest()

    def send(self, request: Request) -> Outcome:
        """Make ``request``'s call once; never raises for network or HTTP trouble.

        The call, redirects followed included, ends by its deadline.
        """
        if self._closed:
            return Transient("client closed")
        transport = self._transport_here()
        deadline = time.monotonic() + self._deadline
        target = request.path.lstrip("/")
        with suppress_instrumentation():
            for _ in range(MAX_REDIRECTS + 1):
                try:
                    answer = transport.request(request.method, target, request.body, deadline)
                except TransportError as exc:
                    return outcome_of(exc)
                followed = _same_origin_redirect(answer)
                if followed is None:
                    break
                target = followed
        return outcome_of(answer)

    def close(self) -> None:
        """Close the connections (only those we created); idempotent."""
        self._closed = True
        if self._owned and self._pid == os.getpid():
            self._transport.close()

    def __enter__(self) -> HackAgentClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _transport_here(self) -> Transport:
        if self._pid != os.getpid():
            # Forked: the pooled sockets belong to the parent. Leave them alone (closing
            # a TLS socket here could disturb the parent's session) and start afresh.
            self._pid = os.getpid()
            self._transport = OwnTransport(**self._settings)
            self._owned = True
        return self._transport


def outcome_of(result: Answer | TransportError) -> Outcome:
    """What an answer, or the lack of one, means for the record: the one mapping.

    2xx is delivered (with the body as lazy JSON when it is JSON and was read whole; a
    body cut short or over the cap still means the API took the record), 408, 429,
    502, 503, 504 and timeouts and network errors are transient (with ``Retry-After``),
    everything else is final: a redirect names where it pointed, another status carries
    the start of the API's answer, and a request that cannot be sent is status 0.
    """
    if isinstance(result, TransportError):
        if result.kind == "unsendable":
            return Rejected(0, result.reason)
        return Transient(result.reason)
    status = result.status
    kind = classify_status(status)
    if kind == "delivered":
        if result.cut is None and "json" in result.content_type:
            return Delivered(status, json_text=result.body)
        return Delivered(status)
    if kind == "transient":
        return Transient(f"HTTP {status}", parse_retry_after(result.retry_after), status)
    if 300 <= status < 400:
        where = repr(result.location[:200]) if result.location else "nowhere (no single Location)"
        return Rejected(
            status,
            f"HTTP {status}: a redirect to {where} was not followed (only a 307 or 308 to "
            f"the same origin is, {MAX_REDIRECTS} times at most); check the base URL",
        )
    text = result.body[:_MAX_REASON].decode("utf-8", "replace")
    if result.cut is not None:
        text += f" [answer {result.cut}]"
    return Rejected(status, f"HTTP {status}: {text}")


def _same_origin_redirect(answer: Answer) -> str | None:
    """Where a 307 or 308 to the same scheme, host and port points (else ``None``).

    Those two keep the method and body by definition; a redirect elsewhere would take
    the credentials with it, and one that turns the call into a GET would lose it.
    """
    if answer.status not in (307, 308) or not answer.location:
        return None
    here = httpx.URL(answer.url)
    try:
        there = here.join(answer.location)
    except httpx.InvalidURL:
        return None
    if (there.scheme, there.host, there.port) != (here.scheme, here.host, here.port):
        return None
    return str(there.copy_with(fragment=None))


def _as_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)


def _deadline_for(timeout: httpx.Timeout, deadline: float | None) -> float:
    """``deadline`` if given, else the longer of the default and connect + read time."""
    if deadline is not None:
        if not deadline > 0:
            raise ValueError("deadline must be > 0 seconds")
        return float(deadline)
    phases = sum(t for t in (timeout.connect, timeout.read) if t is not None)
    return max(DEFAULT_DEADLINE, phases)


def _with_trailing_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"
