"""configure(), force_flush(), shutdown(): attach, never replace; end what is open."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hackagent_otel
from hackagent_otel import StatusEnum, StepTracker, TrackingContext, _sanitize, _setup, semconv
from hackagent_otel._tracer import source as tracer_source
from otel_fixtures import OTel, attrs, json_attr

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def provider(clean_env: None) -> Iterator[TracerProvider]:
    """A bare SDK provider; whatever a test configures on it is shut down afterwards."""
    provider = TracerProvider()
    yield provider
    hackagent_otel.shutdown()
    provider.shutdown()


def processors_of(provider: TracerProvider) -> list[SpanProcessor]:
    return list(provider._active_span_processor._span_processors)


def otlp_exporters(provider: TracerProvider) -> list[Any]:
    return [
        p.span_exporter
        for p in processors_of(provider)
        if isinstance(p, BatchSpanProcessor)
        and isinstance(p.span_exporter, (HttpSpanExporter, GrpcSpanExporter))
    ]


def run_step(run_id: str | None = None) -> StepTracker:
    tracker = StepTracker(TrackingContext(run_id=run_id or str(uuid.uuid4())))
    with tracker.track_step("Step", "STEP"):
        pass
    return tracker


# -- attaching -------------------------------------------------------------------------


def test_configure_attaches_to_the_given_provider_without_replacing_the_global(
    provider: TracerProvider,
) -> None:
    global_before = trace.get_tracer_provider()

    telemetry = hackagent_otel.configure(tracer_provider=provider, handle_sigterm=False)

    assert trace.get_tracer_provider() is global_before
    assert telemetry.provider is provider
    assert telemetry.owns_provider is False
    assert _setup.current() is telemetry


def test_steps_go_to_the_configured_provider(otel: OTel) -> None:
    run_step()

    assert [s.name for s in otel.steps()] == ["Step"]


def test_without_an_otlp_endpoint_no_otlp_processor_is_added(provider: TracerProvider) -> None:
    before = processors_of(provider)

    telemetry = hackagent_otel.configure(tracer_provider=provider, handle_sigterm=False)

    assert telemetry.settings.otlp_enabled is False
    assert otlp_exporters(provider) == []
    assert telemetry.records is not None
    assert processors_of(provider) == [*before, telemetry.records]


def test_an_env_endpoint_does_not_add_otlp_to_a_provider_the_app_owns(
    provider: TracerProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")

    hackagent_otel.configure(tracer_provider=provider, handle_sigterm=False)

    assert otlp_exporters(provider) == []


@pytest.mark.parametrize(
    ("protocol", "exporter_type"), [("http/protobuf", HttpSpanExporter), ("grpc", GrpcSpanExporter)]
)
def test_an_endpoint_argument_adds_one_otlp_processor(
    provider: TracerProvider, protocol: str, exporter_type: type
) -> None:
    telemetry = hackagent_otel.configure(
        tracer_provider=provider,
        otlp_endpoint="http://127.0.0.1:9",
        otlp_protocol=protocol,
        handle_sigterm=False,
    )

    (exporter,) = otlp_exporters(provider)
    assert isinstance(exporter, exporter_type)
    assert len([p for p in telemetry.processors if isinstance(p, BatchSpanProcessor)]) == 1
    if protocol == "http/protobuf":
        assert exporter._endpoint == "http://127.0.0.1:9/v1/traces"  # type: ignore[attr-defined]


def test_a_bad_protocol_is_a_clear_error_and_changes_nothing(otel: OTel) -> None:
    current = _setup.current()

    with pytest.raises(ValueError, match="'udp' is not supported"):
        hackagent_otel.configure(tracer_provider=otel.provider, otlp_protocol="udp")

    assert _setup.current() is current


def test_a_bad_base_url_is_a_clear_error(provider: TracerProvider) -> None:
    with pytest.raises(ValueError, match="must start with http:// or https://"):
        hackagent_otel.configure(tracer_provider=provider, hackagent_base_url="api.example")


def test_redact_keys_extend_the_secret_words(provider: TracerProvider) -> None:
    hackagent_otel.configure(tracer_provider=provider, redact_keys=["ssn"], handle_sigterm=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracker = StepTracker(TrackingContext(run_id=str(uuid.uuid4())))
    with tracker.track_step("Lookup", "STEP", config={"customer_ssn": "123-45-6789"}):
        pass

    (step,) = [s for s in exporter.get_finished_spans() if s.name == "Lookup"]
    assert json_attr(step, semconv.STEP_CONFIG) == {"customer_ssn": _sanitize.REDACTED}


def test_a_full_traces_url_is_not_given_a_second_path(provider: TracerProvider) -> None:
    hackagent_otel.configure(
        tracer_provider=provider,
        otlp_endpoint="http://127.0.0.1:9/v1/traces",
        handle_sigterm=False,
    )

    (exporter,) = otlp_exporters(provider)
    assert exporter._endpoint == "http://127.0.0.1:9/v1/traces"


def test_shutdown_forgets_the_extra_secret_words(provider: TracerProvider) -> None:
    hackagent_otel.configure(tracer_provider=provider, redact_keys=["ssn"], handle_sigterm=False)
    assert tracer_source.sanitizer.is_secret_key("customer_ssn")

    hackagent_otel.shutdown()

    assert not tracer_source.sanitizer.is_secret_key("customer_ssn")


def test_each_configure_owns_its_sanitizer_and_hands_the_known_secrets_on(
    provider: TracerProvider,
) -> None:
    """The words end with their configuration; a secret seen stays a secret."""
    drop_in = tracer_source.sanitizer
    drop_in.sanitize({"password": "pw-drop-in-CANARY-4e1a"})  # tracked before any set-up
    first = hackagent_otel.configure(
        tracer_provider=provider,
        redact_keys=["ssn"],
        hackagent_api_key="hk-first-CANARY-8e9f",
        records="off",
        handle_sigterm=False,
    )
    second = hackagent_otel.configure(tracer_provider=provider, records="off", handle_sigterm=False)

    assert first.sanitizer is not second.sanitizer is tracer_source.sanitizer
    assert first.sanitizer.is_secret_key("customer_ssn")
    assert not second.sanitizer.is_secret_key("customer_ssn")
    text = "pw-drop-in-CANARY-4e1a hk-first-CANARY-8e9f"
    assert second.sanitizer.sanitize_text(text) == f"{_sanitize.REDACTED} {_sanitize.REDACTED}"
    assert second.stats()["secrets"]["pinned"] == 1
    hackagent_otel.shutdown()
    assert tracer_source.sanitizer is drop_in
    assert drop_in.sanitize_text(text) == f"{_sanitize.REDACTED} {_sanitize.REDACTED}"


# -- flushing and shutting down --------------------------------------------------------


def test_shutdown_ends_open_runs(otel: OTel) -> None:
    run_id = str(uuid.uuid4())
    run_step(run_id).update_run_status(StatusEnum.RUNNING)
    assert otel.runs() == []

    hackagent_otel.shutdown()

    (root,) = otel.runs()
    assert attrs(root)[semconv.RUN_ID] == run_id
    assert attrs(root)[semconv.RUN_ENDED_BY] == "shutdown"


def test_shutdown_and_force_flush_are_idempotent(otel: OTel) -> None:
    run_step()
    assert hackagent_otel.force_flush() is True
    assert hackagent_otel.force_flush() is True

    hackagent_otel.shutdown()
    hackagent_otel.shutdown()
    otel.telemetry.shutdown()

    assert _setup.current() is None
    assert hackagent_otel.force_flush() is True
    assert len(otel.runs()) == 1


def test_reconfiguring_ends_the_previous_set_ups_runs(otel: OTel, provider: TracerProvider) -> None:
    run_step()

    hackagent_otel.configure(tracer_provider=provider, handle_sigterm=False)

    assert len(otel.runs()) == 1
    assert otel.telemetry is not _setup.current()


def test_after_reconfiguring_only_the_new_set_up_makes_records(
    clean_env: None, provider: TracerProvider
) -> None:
    first = hackagent_otel.configure(tracer_provider=provider, records="on", handle_sigterm=False)
    second = hackagent_otel.configure(tracer_provider=provider, records="on", handle_sigterm=False)
    assert first.records is not None
    assert second.records is not None

    run_step(str(uuid.uuid4()))
    hackagent_otel.force_flush()

    assert first.records.stats()["spans"] == 0  # still attached, but out of the way
    assert second.records.stats()["spans"] == 1


def test_a_created_provider_honours_service_name_from_resource_attributes(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=red-team-nightly")
    try:
        telemetry = hackagent_otel.configure(set_global_provider=False, handle_sigterm=False)
        assert telemetry.provider.resource.attributes["service.name"] == "red-team-nightly"
    finally:
        hackagent_otel.shutdown()


# -- process-wide behaviour, each in a fresh interpreter -------------------------------


def run_python(code: str, tmp_path: Path, *, expect_code: int = 0) -> Any:
    """Run ``code`` in a fresh interpreter; return the JSON it printed last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HACKAGENT_"))}
    env["PYTHONPATH"] = str(SRC)
    env["HACKAGENT_OUTBOX_PATH"] = str(tmp_path / "outbox.sqlite3")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == expect_code, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_providers_are_attached_created_and_made_global_as_documented(tmp_path: Path) -> None:
    result = run_python(
        """
        import json, uuid
        from opentelemetry import trace
        import hackagent_otel
        from hackagent_otel import StepTracker, TrackingContext, _setup

        out = {}
        # Used before configure(): a private provider, the global left alone.
        with StepTracker(TrackingContext(run_id=str(uuid.uuid4()))).track_step("s", "S"):
            pass
        implicit = _setup.current()
        out["implicit"] = [implicit is not None and implicit.owns_provider,
                           trace.get_tracer_provider() is not implicit.provider]
        hackagent_otel.shutdown()
        # No provider anywhere: one is created and made global.
        created = hackagent_otel.configure(handle_sigterm=False)
        out["created"] = [created.owns_provider,
                          trace.get_tracer_provider() is created.provider]
        hackagent_otel.shutdown()
        # A global SDK provider exists now: configure() attaches to it.
        attached = hackagent_otel.configure(handle_sigterm=False)
        out["attached"] = [attached.owns_provider,
                           attached.provider is trace.get_tracer_provider()]
        hackagent_otel.shutdown()
        print(json.dumps(out))
        """,
        tmp_path,
    )

    assert result == {
        "implicit": [True, True],
        "created": [True, True],
        "attached": [False, True],
    }


#: A run printed as it ends, then a step that waits for SIGTERM as ``{wait}`` says.
SIGTERM_SCRIPT = """
import json, os, signal, threading, time, uuid
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export import SpanExporter
import hackagent_otel
from hackagent_otel import StatusEnum, StepTracker, TrackingContext

class Printer(SpanExporter):
    def export(self, spans):
        for span in spans:
            if span.name == "hackagent.run":
                print(json.dumps(dict(span.attributes)), flush=True)
        return SpanExportResult.SUCCESS

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(Printer()))
hackagent_otel.configure(tracer_provider=provider)
tracker = StepTracker(TrackingContext(run_id=str(uuid.uuid4())))
tracker.update_run_status(StatusEnum.RUNNING)
with tracker.track_step("long step", "STEP"):
    os.kill(os.getpid(), signal.SIGTERM)
    {wait}
"""

WAITS = {
    "sleeping": "time.sleep(600)",
    "joining a non-daemon thread": (
        "worker = threading.Thread(target=time.sleep, args=(600,)); worker.start(); worker.join()"
    ),
    "in a loop with a bare except": (
        "end = time.monotonic() + 600\n"
        "    while time.monotonic() < end:\n"
        "        try:\n"
        "            time.sleep(0.01)\n"
        "        except:  # noqa: E722\n"
        "            pass"
    ),
}


@pytest.mark.parametrize("wait", list(WAITS))
def test_sigterm_ends_open_runs_then_the_process_dies_of_it_as_without_us(
    tmp_path: Path, wait: str
) -> None:
    """Supervisors read how a process ended: after the flush it is killed by the signal
    (not an exit status), whatever the main thread was doing (each wait is 600 s, far
    past the interpreter's 60 s timeout), and open runs are ended."""
    result = run_python(
        SIGTERM_SCRIPT.replace("{wait}", WAITS[wait]), tmp_path, expect_code=-signal.SIGTERM
    )

    assert result[semconv.KIND] == semconv.KIND_RUN
    assert result[semconv.RUN_ENDED_BY] == "signal"


def test_sigterm_ends_a_forked_child_as_if_no_handler_were_installed(tmp_path: Path) -> None:
    """A forked child inherits the handler, but may be anywhere when SIGTERM comes: in a
    fork hook, or in code that catches ``BaseException`` (Python swallows what an
    ``os.register_at_fork`` hook raises). There, an exit by ``SystemExit`` is lost and
    ``Pool.terminate()`` waits for ever; the child's records are in the outbox already
    (children are durable first), so it dies of the signal, as without us."""
    result = run_python(
        """
        import json, os, signal, time
        import hackagent_otel

        hackagent_otel.configure(records="off")
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            try:
                os.write(ready_w, b"x")
                time.sleep(30)
            except BaseException:
                pass
            os._exit(0)
        os.close(ready_w)
        os.read(ready_r, 1)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        ended = [os.WIFSIGNALED(status), os.WTERMSIG(status) if os.WIFSIGNALED(status) else None]
        print(json.dumps({"child": ended}))
        """,
        tmp_path,
    )

    assert result == {"child": [True, signal.SIGTERM]}


def test_configure_with_no_home_folder_keeps_records_in_a_folder_of_the_users_own(
    no_home: Path, provider: TracerProvider
) -> None:
    """A container running as an arbitrary UID (no HOME, no passwd entry): configure()
    raised and implicit set-up turned tracking off; now the outbox goes to tmp."""
    from hackagent_otel._delivery.outbox import Outbox

    hackagent_otel.configure(tracer_provider=provider, handle_sigterm=False)
    context = TrackingContext(run_id=str(uuid.uuid4()), parent_result_id=str(uuid.uuid4()))
    with StepTracker(context).track_step("s", "STEP"):
        pass
    hackagent_otel.shutdown()

    with Outbox(no_home / "outbox.sqlite3") as outbox:
        assert outbox.pending_count() == 2
