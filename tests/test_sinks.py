"""Where a run's records go: its own client, the configured API, the outbox, or nowhere."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

import hackagent_otel
from hackagent_otel import StepTracker, TrackingContext
from hackagent_otel._config import Settings
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel._outbox_files import api_target, outbox_path_for_target
from hackagent_otel._routing import routes
from hackagent_otel._sanitize import Sanitizer
from hackagent_otel._sinks import SinkRouter
from hackagent_otel.testing import FakeHackAgentAPI


def one_step(client: object = None) -> str:
    result_id = str(uuid.uuid4())
    tracker = StepTracker(TrackingContext(client, str(uuid.uuid4()), result_id))
    with tracker.track_step("Step", "STEP"):
        pass
    return result_id


def pending_in(path: Path) -> int:
    if not path.exists():
        return 0
    with Outbox(path) as outbox:
        return outbox.counts().pending


@pytest.fixture
def provider(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[TracerProvider]:
    monkeypatch.delenv("HACKAGENT_RECORDS", raising=False)
    provider = TracerProvider()
    yield provider
    hackagent_otel.shutdown()
    provider.shutdown()


@pytest.fixture
def otlp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spans go out over OTLP (an env endpoint; nothing is attached to a given provider)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")


def test_auto_with_otlp_and_no_api_leaves_records_to_the_collector_and_bridge(
    provider: TracerProvider, otlp_env: None, env_outbox_path: Path
) -> None:
    telemetry = hackagent_otel.configure(tracer_provider=provider, handle_sigterm=False)
    one_step()
    hackagent_otel.shutdown()

    assert telemetry.records is not None
    assert telemetry.records.stats()["records"] == 0
    assert not env_outbox_path.exists()


def test_auto_with_otlp_still_delivers_runs_that_carry_their_own_client(
    provider: TracerProvider, otlp_env: None, fake_api: FakeHackAgentAPI
) -> None:
    hackagent_otel.configure(tracer_provider=provider, handle_sigterm=False)
    headers = {"Authorization": f"Bearer {fake_api.api_key}"}
    with httpx.Client(base_url=fake_api.base_url, headers=headers) as client:
        result_id = one_step(client)
        assert hackagent_otel.force_flush(5_000)
    assert len(fake_api.traces_for(result_id)) == 2


@pytest.mark.parametrize("how", ["argument", "env"])
def test_records_on_keeps_them_in_the_outbox_even_with_otlp(
    provider: TracerProvider,
    otlp_env: None,
    env_outbox_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    if how == "env":
        monkeypatch.setenv("HACKAGENT_RECORDS", "on")
        hackagent_otel.configure(tracer_provider=provider, handle_sigterm=False)
    else:
        hackagent_otel.configure(tracer_provider=provider, handle_sigterm=False, records="on")
    one_step()
    hackagent_otel.shutdown()

    assert pending_in(env_outbox_path) == 2


@pytest.mark.parametrize("how", ["argument", "env"])
def test_records_off_makes_none_at_all(
    provider: TracerProvider,
    env_outbox_path: Path,
    fake_api: FakeHackAgentAPI,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    if how == "env":
        monkeypatch.setenv("HACKAGENT_RECORDS", "off")
        telemetry = hackagent_otel.configure(tracer_provider=provider, handle_sigterm=False)
    else:
        telemetry = hackagent_otel.configure(
            tracer_provider=provider, handle_sigterm=False, records="off"
        )
    headers = {"Authorization": f"Bearer {fake_api.api_key}"}
    with httpx.Client(base_url=fake_api.base_url, headers=headers) as client:
        one_step(client)
        one_step()
        hackagent_otel.shutdown()

    assert telemetry.records is None
    assert fake_api.calls == []
    assert not env_outbox_path.exists()


def test_without_an_api_or_otlp_records_go_to_the_outbox(
    provider: TracerProvider, env_outbox_path: Path
) -> None:
    hackagent_otel.configure(tracer_provider=provider, handle_sigterm=False)
    one_step()
    hackagent_otel.shutdown()

    assert pending_in(env_outbox_path) == 2
    with Outbox(env_outbox_path) as outbox:
        assert outbox.target is None  # made with no API: `push` needs one named for it


@pytest.mark.parametrize("client_kind", ["configured API", "httpx.Client on the context"])
def test_records_for_an_api_wait_in_its_own_outbox_which_records_its_base_url(
    provider: TracerProvider,
    env_outbox_path: Path,
    fake_api: FakeHackAgentAPI,
    client_kind: str,
) -> None:
    fake_api.stop()
    headers = {"Authorization": f"Bearer {fake_api.api_key}"}
    if client_kind == "configured API":
        hackagent_otel.configure(
            tracer_provider=provider,
            handle_sigterm=False,
            hackagent_base_url=fake_api.base_url + "/",
            hackagent_api_key=fake_api.api_key,
        )
        one_step()
        hackagent_otel.shutdown()
    else:
        hackagent_otel.configure(tracer_provider=provider, handle_sigterm=False)
        with httpx.Client(base_url=fake_api.base_url, headers=headers) as client:
            one_step(client)
            hackagent_otel.shutdown()

    assert not env_outbox_path.exists()  # the default outbox is for records made with no API
    for_api = outbox_path_for_target(env_outbox_path, fake_api.base_url)
    assert pending_in(for_api) == 2
    with Outbox(for_api) as outbox:
        assert outbox.target == api_target(fake_api.base_url) == fake_api.base_url
    for file in for_api.parent.glob(f"{for_api.name}*"):
        assert fake_api.api_key.encode() not in file.read_bytes(), file


# -- the router ------------------------------------------------------------------------


def test_each_client_gets_one_service_with_its_own_outbox_beside_the_default(
    clean_env: None, env_outbox_path: Path, fake_api: FakeHackAgentAPI
) -> None:
    settings = Settings.resolve()
    router = SinkRouter(settings, Sanitizer())
    client = httpx.Client(base_url=fake_api.base_url)
    run_a, run_b, run_c = (str(uuid.uuid4()) for _ in range(3))
    routes.register(run_a, client)
    routes.register(run_b, client)
    try:
        service = router(run_a)
        assert router(run_b) is service
        assert router(run_c) is router.default
        assert service is not router.default
        assert set(router.sinks()) == {service, router.default}
        path = outbox_path_for_target(env_outbox_path, fake_api.base_url)
        assert path.parent == env_outbox_path.parent
        assert path.name.startswith("outbox-")
        assert path.suffix == ".sqlite3"
    finally:
        for sink in router.sinks():
            sink.shutdown(1.0)
        client.close()


def test_client_objects_with_the_same_target_share_one_service(
    clean_env: None, fake_api: FakeHackAgentAPI
) -> None:
    """A pipeline that builds a new client per run must not build a service per run."""
    router = SinkRouter(Settings.resolve(), Sanitizer())

    def client(token: str) -> httpx.Client:
        return httpx.Client(base_url=fake_api.base_url, headers={"Authorization": token})

    same = [client("Bearer a") for _ in range(5)]
    other = client("Bearer b")
    runs = {}
    for c in [*same, other]:
        run_id = str(uuid.uuid4())
        routes.register(run_id, c)
        runs[run_id] = c
    try:
        services = {run_id: router(run_id) for run_id in runs}
        shared = {services[r] for r, c in runs.items() if c is not other}
        assert len(shared) == 1
        assert services[next(r for r, c in runs.items() if c is other)] not in shared
        assert len(set(router.sinks()) - {router.default}) == 2
    finally:
        for sink in router.sinks():
            sink.shutdown(1.0)
        for c in [*same, other]:
            c.close()


def test_a_client_that_cannot_be_used_falls_back_to_the_default(clean_env: None) -> None:
    router = SinkRouter(Settings.resolve(), Sanitizer())
    run_id = str(uuid.uuid4())
    routes.register(run_id, object())
    try:
        assert router(run_id) is router.default
    finally:
        router.default.shutdown(1.0)


def test_the_default_service_is_built_when_the_router_is(clean_env: None) -> None:
    # Not lazily on the mapping thread, where a fork could catch it half-built.
    router = SinkRouter(Settings.resolve(), Sanitizer())
    try:
        assert list(router.sinks()) == [router.default]
    finally:
        router.default.shutdown(1.0)
    assert list(SinkRouter(Settings.resolve(), Sanitizer(), default_enabled=False).sinks()) == []
