"""HackAgentClient: one keep-alive httpx client that makes a record's API call once.

It turns every answer and every network failure into an :class:`Outcome` and never
raises for them. It can be built from this package's own settings, from a hackagent
``AuthenticatedClient`` (duck-typed: hackagent is never imported) or from an
``httpx.Client`` the caller already configured (used as is and never closed).

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
import http.client
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import httpx

from hackagent_otel._delivery.fast_http import (
    FastResponse,
    StdlibHTTP,
    UnsafeRequest,
    plain_http_without_proxy,
)
from hackagent_otel._delivery.outcome import Delivered, Outcome, Rejected, Transient
from hackagent_otel._delivery.retry import classify_status, parse_retry_after
from hackagent_otel._records import Request

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_TIMEOUT", "HackAgentClient", "suppress_instrumentation"]

DEFAULT_BASE_URL = "https://api.hackagent.dev"
#: Read/write/pool timeout 10 s, connect 5 s: a hung API costs a sender at most that long.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_MAX_REASON = 500

_log = logging.getLogger("hackagent_otel.delivery")


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


#: ``httpx`` makes every client use httpx even for plain http (see HackAgentClient).
TRANSPORT_ENV = "HACKAGENT_HTTP_TRANSPORT"


class HackAgentClient:
    """Makes HackAgent API calls for :class:`~hackagent_otel._records.Record` objects.

    ``base_url`` defaults to ``https://api.hackagent.dev``; record paths are relative to
    it with no extra prefix (a base URL with a path, such as ``https://host/api``, keeps
    that path). Thread-safe: the underlying connection pool serves concurrent senders,
    one keep-alive connection each. Fork-safe: a child process never reuses the parent's
    connections (see :meth:`from_httpx` for what a borrowed client becomes there), and
    a call imports nothing lazily (a fork in the middle of an import on a sender thread
    would leave the child a module lock that no thread there ever releases).

    ``transport``: ``"httpx"`` sends every call through one keep-alive httpx client.
    ``"auto"`` (default; ``$HACKAGENT_HTTP_TRANSPORT`` overrides it) does so too, except
    for a plain ``http://`` base URL with no proxy in the environment, where a lean
    keep-alive HTTP/1.1 transport on plain sockets
    (:mod:`~hackagent_otel._delivery.fast_http`) carries the calls: on loopback or a LAN
    the client's CPU is the whole cost, and httpx's calls from several sender threads
    serialize on the interpreter lock (measured: 0.8x one sequential httpx client with
    httpx, about 4x with the lean transport). https, proxies and clients built with
    :meth:`from_httpx` always use httpx.
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
        transport: Literal["auto", "httpx"] | None = None,
    ) -> None:
        if transport is None:
            transport = "httpx" if os.environ.get(TRANSPORT_ENV, "").lower() == "httpx" else "auto"
        merged: dict[str, str] = {**_JSON_HEADERS, **(headers or {})}
        if api_key:
            merged[auth_header_name] = f"{auth_prefix} {api_key}" if auth_prefix else api_key
        self._settings: dict[str, Any] = {
            "base_url": _with_trailing_slash(base_url),
            "headers": merged,
            "timeout": timeout,
            "verify": verify,
            "limits": httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            "follow_redirects": False,
        }
        self._owned = True
        self._client: httpx.Client = httpx.Client(**self._settings)
        self._pid = os.getpid()
        self._closed = False
        self._fast: StdlibHTTP | None = None
        if transport == "auto" and plain_http_without_proxy(base_url):
            connect, read = _timeouts(timeout)
            self._fast = StdlibHTTP(
                base_url,
                {"User-Agent": "hackagent-otel", **merged},
                connect_timeout=connect,
                read_timeout=read,
            )

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
    def from_httpx(cls, client: httpx.Client) -> HackAgentClient:
        """Use a configured ``httpx.Client`` as is: its base URL, headers and auth apply.

        The client is never closed by us. It must have a ``base_url``. In a forked child
        a new ``httpx.Client`` is built from its base URL, headers, auth, cookies and
        timeout (a custom transport or TLS setting is not carried over), because the
        parent's pooled connections must not be shared.
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
            "follow_redirects": False,
        }
        self._owned = False
        self._client = client
        self._pid = os.getpid()
        self._closed = False
        self._fast = None
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

    def send(self, record: Request) -> Outcome:
        """Make ``record``'s call once; never raises for network or HTTP trouble."""
        content = record.body
        if self._closed:
            return Transient("client closed")
        if self._fast is not None:
            # Plain sockets: no OpenTelemetry instrumentation wraps them, so nothing to
            # suppress (httpx below is instrumented, and is suppressed).
            return self._send_fast(self._fast, record, content)
        try:
            with suppress_instrumentation():
                response = self._http().request(
                    record.method,
                    record.path.lstrip("/"),
                    content=content,
                    headers=_JSON_HEADERS,
                )
        except httpx.TimeoutException as exc:
            return Transient(f"timeout ({type(exc).__name__})")
        except httpx.UnsupportedProtocol as exc:
            return Rejected(0, f"bad API URL: {exc}")
        except httpx.HTTPError as exc:
            return Transient(f"{type(exc).__name__}: {exc}"[:_MAX_REASON])
        except (OSError, RuntimeError) as exc:  # e.g. client closed under us
            return Transient(f"{type(exc).__name__}: {exc}"[:_MAX_REASON])
        return _outcome(response)

    @property
    def transport(self) -> Literal["stdlib", "httpx"]:
        """Which transport carries the calls (see the class docstring)."""
        return "stdlib" if self._fast is not None else "httpx"

    def close(self) -> None:
        """Close the connections (only those we created); idempotent."""
        self._closed = True
        if self._fast is not None:
            self._fast.close()
        if self._owned and self._pid == os.getpid():
            self._client.close()

    def _send_fast(self, fast: StdlibHTTP, record: Request, content: bytes) -> Outcome:
        try:
            response = fast.request(record.method, record.path, content)
        except TimeoutError as exc:
            return Transient(f"timeout ({type(exc).__name__})")
        except UnsafeRequest as exc:  # the same record would be refused every time
            return Rejected(0, str(exc)[:_MAX_REASON])
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # ValueError: a connection closed by shutdown under a blocked read.
            return Transient(f"{type(exc).__name__}: {exc}"[:_MAX_REASON])
        return _fast_outcome(response)

    def __enter__(self) -> HackAgentClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _http(self) -> httpx.Client:
        if self._pid != os.getpid():
            # Forked: the pooled sockets belong to the parent. Leave them alone (closing
            # a TLS socket here could disturb the parent's session) and start afresh.
            self._pid = os.getpid()
            self._client = httpx.Client(**self._settings)
            self._owned = True
        return self._client


def _outcome(response: httpx.Response) -> Outcome:
    status = response.status_code
    kind = classify_status(status)
    if kind == "delivered":
        if "json" in response.headers.get("content-type", ""):
            return Delivered(status, json_text=response.content)
        return Delivered(status)
    if kind == "transient":
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return Transient(f"HTTP {status}", retry_after, status)
    return Rejected(status, f"HTTP {status}: {response.text[:_MAX_REASON]}")


def _fast_outcome(response: FastResponse) -> Outcome:
    status = response.status
    kind = classify_status(status)
    if kind == "delivered":
        if "json" in response.content_type:
            return Delivered(status, json_text=response.body)
        return Delivered(status)
    if kind == "transient":
        return Transient(f"HTTP {status}", parse_retry_after(response.retry_after), status)
    text = response.body[:_MAX_REASON].decode("utf-8", "replace")
    return Rejected(status, f"HTTP {status}: {text}")


def _timeouts(timeout: float | httpx.Timeout | None) -> tuple[float | None, float | None]:
    """(connect, read) seconds from an httpx-style timeout."""
    if isinstance(timeout, httpx.Timeout):
        return timeout.connect, timeout.read
    return timeout, timeout


def _with_trailing_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"
