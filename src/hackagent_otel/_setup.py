"""``configure()``, ``force_flush()``, ``shutdown()``: tracing set up in one call.

``configure()`` attaches to the SDK ``TracerProvider`` already in force (the argument,
or the global one set by the app or by ``opentelemetry-instrument``) instead of
replacing it, so the user's other tracing keeps working. Only when there is none does
it create one, exporting over OTLP when an endpoint is configured. Pending data is
flushed at interpreter exit and on SIGTERM.

Each ``configure()`` builds the :class:`~hackagent_otel._sanitize.Sanitizer` of its
configuration (its extra secret words, the API key pinned), owns it (``Telemetry``) and
hands it to the tracer source, where the tracker and the SDK side find it; ``shutdown()``
gives the source its drop-in sanitizer back, so no configuration's words outlive it.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from hackagent_otel import _goals, _sdk_hooks, _tracer
from hackagent_otel._config import Settings
from hackagent_otel._delivery.service import DeliveryService
from hackagent_otel._processor import HackAgentSpanProcessor
from hackagent_otel._runs import runs
from hackagent_otel._sanitize import Sanitizer, SecretScrubbingFilter
from hackagent_otel._sinks import SinkRouter
from hackagent_otel._tracker import stats as tracking_stats

_logger = logging.getLogger("hackagent_otel")


class Telemetry:
    """What one ``configure()`` call set up; ``shutdown()`` undoes it."""

    def __init__(
        self,
        settings: Settings,
        provider: TracerProvider,
        owns_provider: bool,
        sanitizer: Sanitizer,
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.owns_provider = owns_provider
        #: This configuration's key policy and known secrets.
        self.sanitizer = sanitizer
        self.processors: list[SpanProcessor] = []
        #: The processor that makes HackAgent records in this process, if any.
        self.records: HackAgentSpanProcessor | None = None
        self._shut_down = False
        self._lock = threading.Lock()

    def add_processor(self, processor: SpanProcessor) -> None:
        self.provider.add_span_processor(processor)
        self.processors.append(processor)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything finished so far; True if it all went out in time."""
        if self.owns_provider:
            return self.provider.force_flush(timeout_millis)
        return all(p.force_flush(timeout_millis) for p in self.processors)

    def stats(self) -> dict[str, Any]:
        """Counts of everything tracking did, dropped or could not do, for monitoring."""
        out: dict[str, Any] = {
            "tracking": tracking_stats.snapshot(),
            "secrets": self.sanitizer.known_secrets_stats(),
            "runs": {"open": len(runs.open_runs()), "evicted": runs.evicted},
        }
        if self.records is not None:
            out["mapping"] = self.records.stats()
            out["delivery"] = [
                dataclasses.asdict(sink.stats())
                for sink in self.records.sinks()
                if isinstance(sink, DeliveryService)
            ]
        return out

    def shutdown(self, ended_by: str = "shutdown") -> None:
        """End open runs, flush and stop what this call set up. Idempotent."""
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
        _goals.end_open_goals()
        runs.end_all(ended_by)
        if self.owns_provider:
            self.provider.shutdown()
            return
        for processor in self.processors:
            processor.shutdown()
        if ended_by == "reconfigure" and self.records is not None:
            # The provider keeps every processor it was given; the new set-up's
            # processor makes the records from now on.
            self.records.detach()


_current: Telemetry | None = None
_current_lock = threading.RLock()
_exit_hook_registered = False


def configure(
    *,
    service_name: str | None = None,
    tracer_provider: TracerProvider | None = None,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    hackagent_base_url: str | None = None,
    hackagent_api_key: str | None = None,
    outbox_path: str | os.PathLike[str] | None = None,
    redact_keys: list[str] | tuple[str, ...] | None = None,
    records: str | None = None,
    set_global_provider: bool = True,
    handle_sigterm: bool = True,
) -> Telemetry:
    """Set up tracing for HackAgent steps in one call.

    Every argument falls back to its env var (``OTEL_SERVICE_NAME``,
    ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` / ``_PROTOCOL``, ``HACKAGENT_BASE_URL``,
    ``HACKAGENT_API_KEY``, ``HACKAGENT_OUTBOX_PATH``, ``HACKAGENT_REDACT_KEYS``), then
    to its default. Calling it again replaces the previous set-up.

    Args:
        tracer_provider: an SDK provider to attach to; default: the global one if it
            is an SDK provider, else a new one (made global if ``set_global_provider``).
        otlp_endpoint: OTLP base endpoint (``http://host:4318`` or ``host:4317`` for
            grpc); with an existing provider, OTLP is only added when this is given.
        redact_keys: extra words that mark a key as secret, on top of the built-in ones.
        handle_sigterm: on SIGTERM, end open runs and flush (bounded), then let the
            signal end the process as it would without us; only when no other handler
            is installed.
    """
    settings = Settings.resolve(
        service_name=service_name,
        otlp_endpoint=otlp_endpoint,
        otlp_protocol=otlp_protocol,
        hackagent_base_url=hackagent_base_url,
        hackagent_api_key=hackagent_api_key,
        outbox_path=outbox_path,
        redact_keys=redact_keys,
        records=records,
    )
    global _current
    with _current_lock:
        if _current is not None:
            _current.shutdown("reconfigure")
        sanitizer = Sanitizer(extra_secret_words=settings.redact_keys)
        sanitizer.pin_secret(settings.hackagent_api_key, configured=True)
        provider, owned = _provider_for(tracer_provider, settings, set_global_provider)
        telemetry = Telemetry(settings, provider, owned, sanitizer)
        if settings.otlp_enabled and (owned or otlp_endpoint):
            telemetry.add_processor(BatchSpanProcessor(_otlp_exporter(settings)))
        _goals.set_id_resolver(None, settings.result_id_timeout)
        if settings.records != "off":
            router = SinkRouter(
                settings, sanitizer, default_enabled=settings.delivers_default_records
            )
            telemetry.records = HackAgentSpanProcessor(router)
            telemetry.add_processor(telemetry.records)
            _goals.set_id_resolver(router.result_id)
        _tracer.source.use_provider(provider)
        _tracer.source.use_sanitizer(sanitizer)
        _current = telemetry
        _register_exit_hook()
    if handle_sigterm:
        _install_sigterm_handler()
    return telemetry


def _provider_for(
    given: TracerProvider | None, settings: Settings, set_global: bool
) -> tuple[TracerProvider, bool]:
    if given is not None:
        return given, False
    existing = trace.get_tracer_provider()
    if isinstance(existing, TracerProvider):
        return existing, False
    provider = TracerProvider(resource=_resource(settings), shutdown_on_exit=False)
    if set_global:
        trace.set_tracer_provider(provider)
    return provider, True


def _resource(settings: Settings) -> Resource:
    """``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME`` as the SDK reads them; our
    default service name only where neither names one."""
    explicit = {"service.name": settings.service_name} if settings.service_name_given else {}
    resource = Resource.create(explicit)
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": settings.service_name}))
    return resource


def _otlp_exporter(settings: Settings) -> SpanExporter:
    """The SDK's own OTLP exporter; with no endpoint argument it reads the env vars."""
    endpoint = settings.otlp_endpoint
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=endpoint) if endpoint else GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    if endpoint:
        endpoint = endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        return HttpExporter(endpoint=endpoint)
    return HttpExporter()


def _register_exit_hook() -> None:
    global _exit_hook_registered
    if not _exit_hook_registered:
        _exit_hook_registered = True
        atexit.register(_shutdown_at_exit)


def _shutdown_at_exit() -> None:
    telemetry = _current
    if telemetry is not None:
        telemetry.shutdown("exit")


#: How long the flush SIGTERM starts may take before the signal ends the process anyway
#: (supervisors commonly allow 30 s before SIGKILL; delivery persists what it cannot send).
SIGTERM_FLUSH_SECONDS = 10.0


def _install_sigterm_handler() -> None:
    """On SIGTERM, flush, then let the signal end the process exactly as without us.

    The handler raises nothing into the app (an exception there could be caught by a bare
    ``except:``, or leave the main thread's exit waiting on a non-daemon thread, and
    would change the exit status supervisors read): it puts the default back, so a
    second SIGTERM ends the process at once, ends open runs and flushes on a thread of
    its own, bounded by :data:`SIGTERM_FLUSH_SECONDS`, and sends the signal again. The
    process then dies of SIGTERM, as it would have. A forked child that inherited the
    handler does not flush (its records are committed to the outbox as they are made):
    the signal ends it at once.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    installed_by = os.getpid()

    def _flush_then_die(signum: int, frame: FrameType | None) -> None:
        signal.signal(signum, signal.SIG_DFL)
        if os.getpid() != installed_by:
            os.kill(os.getpid(), signum)
            return
        threading.Thread(
            target=_flush_and_resignal, args=(signum,), name="hackagent-otel-sigterm", daemon=True
        ).start()

    signal.signal(signal.SIGTERM, _flush_then_die)


def _flush_and_resignal(signum: int) -> None:
    """End open runs and flush (bounded), then send ``signum`` to this process again."""
    try:
        flusher = threading.Thread(
            target=_shutdown_on_signal, name="hackagent-otel-sigterm-flush", daemon=True
        )
        flusher.start()
        flusher.join(SIGTERM_FLUSH_SECONDS)
        if flusher.is_alive():
            _logger.warning(
                "hackagent_otel: the flush SIGTERM started took over %.0f s; exiting anyway "
                "(what was not delivered waits in the outbox)",
                SIGTERM_FLUSH_SECONDS,
            )
    finally:
        os.kill(os.getpid(), signum)


def _shutdown_on_signal() -> None:
    telemetry = _current
    if telemetry is not None:
        telemetry.shutdown("signal")


def current() -> Telemetry | None:
    """The active set-up, if ``configure()`` was called (explicitly or implicitly)."""
    return _current


def force_flush(timeout_millis: int = 30_000) -> bool:
    """Export everything finished so far; True if it all went out within the timeout."""
    telemetry = _current
    if telemetry is not None:
        return telemetry.force_flush(timeout_millis)
    provider = trace.get_tracer_provider()
    return (
        bool(provider.force_flush(timeout_millis)) if isinstance(provider, TracerProvider) else True
    )


def shutdown() -> None:
    """End open runs, flush and stop what ``configure()`` set up. Idempotent."""
    global _current
    with _current_lock:
        telemetry, _current = _current, None
    if telemetry is not None:
        telemetry.shutdown()
    else:
        _goals.end_open_goals()
        runs.end_all("shutdown")
    _goals.set_id_resolver(None)
    _tracer.source.reset()  # the drop-in sanitizer again: no extra secret words


def _configure_implicitly() -> None:
    """First use with no SDK provider anywhere: set up privately, from env vars only."""
    with _current_lock:
        if _current is None:
            configure(set_global_provider=False, handle_sigterm=False)


#: Takes the known secrets of the sanitizer in force for the tracker (whichever
#: ``configure()`` made last, else the drop-in one) out of the package's log records.
LOG_FILTER = SecretScrubbingFilter(lambda: _tracer.source.sanitizer)

#: Every logger the package logs on; known secrets are scrubbed from their records.
PACKAGE_LOGGERS = (
    "hackagent_otel",
    "hackagent_otel.bridge",
    "hackagent_otel.delivery",
    "hackagent_otel.exporter",
    "hackagent_otel.instrumentation",
    "hackagent_otel.processor",
)


def connect_tracer_source() -> None:
    """Give the tracker's tracer source what it may not import itself: the SDK side's
    adapter for our own tracer, and ``configure()`` from env vars for a first use with
    no SDK provider anywhere (a drop-in user who never calls it still gets records);
    and the scrubbing of known secrets from every logger the package logs on.

    Called once, by the package (``hackagent_otel/__init__.py``), so that importing this
    module sets nothing up; calling it again changes nothing.
    """
    _tracer.source.add_adapter(_sdk_hooks.adapt_tracer)
    _tracer.source.set_fallback_configurer(_configure_implicitly)
    LOG_FILTER.attach(*PACKAGE_LOGGERS)
