"""HackAgent pipeline step tracking on OpenTelemetry.

A drop-in for ``hackagent.router.tracking``'s ``StepTracker`` and ``TrackingContext``:
each step becomes an OpenTelemetry span (for Jaeger or any OTLP backend) and, through
the exporter, the same HackAgent API records the original sent, without the pipeline
ever waiting on the network.
"""

from hackagent_otel import _setup, semconv
from hackagent_otel._context import TrackingContext
from hackagent_otel._coordinator import TrackingCoordinator
from hackagent_otel._decorators import track_method, track_operation, track_pipeline
from hackagent_otel._delivery.client import HackAgentClient
from hackagent_otel._enums import EvaluationStatusEnum, StatusEnum, StepTypeEnum
from hackagent_otel._exporter import HackAgentSpanExporter
from hackagent_otel._goals import Context, Tracker
from hackagent_otel._processor import HackAgentSpanProcessor
from hackagent_otel._propagation import ContextPropagatingExecutor, with_current_context
from hackagent_otel._runs import trace_id_hex_for_run
from hackagent_otel._setup import Telemetry, configure, force_flush, shutdown
from hackagent_otel._tracker import StepTracker

__version__ = "0.1.0"

# The one piece of wiring done on import: the tracker speaks the OpenTelemetry API only,
# so the SDK side and the set-up hand its tracer source what it needs.
_setup.connect_tracer_source()

__all__ = [
    "Context",
    "ContextPropagatingExecutor",
    "EvaluationStatusEnum",
    "HackAgentClient",
    "HackAgentSpanExporter",
    "HackAgentSpanProcessor",
    "StatusEnum",
    "StepTracker",
    "StepTypeEnum",
    "Telemetry",
    "Tracker",
    "TrackingContext",
    "TrackingCoordinator",
    "__version__",
    "configure",
    "force_flush",
    "semconv",
    "shutdown",
    "trace_id_hex_for_run",
    "track_method",
    "track_operation",
    "track_pipeline",
    "with_current_context",
]
