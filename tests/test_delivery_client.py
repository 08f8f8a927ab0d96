"""HackAgentClient against the fake API over real loopback HTTP: an outcome for every answer
and failure, with our own httpx client and with a caller's (byte-level misbehaviour is in
tests/test_delivery_transport.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from opentelemetry import context as otel_context

from hackagent_otel._delivery.client import HackAgentClient, suppress_instrumentation
from hackagent_otel._delivery.outcome import Delivered, Rejected, Transient
from hackagent_otel._records import Record, Request
from hackagent_otel.testing import FakeHackAgentAPI, Fault

KEY = "test-key"


def trace_record(result_id: str | None = None, seq: int = 1, **body: Any) -> Request:
    result_id = result_id or str(uuid.uuid4())
    payload: dict[str, Any] = {"sequence": seq, "step_type": "OTHER", "content": {"n": seq}}
    payload.update(body)
    return Record("trace", "POST", f"/result/{result_id}/trace", payload, result_id).request()


@pytest.fixture(params=["own", "borrowed"])
def client(fake_api: FakeHackAgentAPI, request: pytest.FixtureRequest) -> Iterator[HackAgentClient]:
    """The client both ways: on the httpx client we build, and on a caller's."""
    if request.param == "own":
        with HackAgentClient(fake_api.base_url, KEY, timeout=2.0) as own:
            yield own
        return
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=fake_api.base_url, headers=headers, timeout=2.0) as http:
        yield HackAgentClient.from_httpx(http)


def test_created_trace_is_delivered_with_the_parsed_body(
    fake_api: FakeHackAgentAPI, client: HackAgentClient
) -> None:
    outcome = client.send(trace_record(seq=3))
    assert isinstance(outcome, Delivered)
    assert outcome.status == 201
    assert outcome.body["sequence"] == 3
    call = fake_api.calls[0]
    assert call.headers["authorization"] == f"Bearer {KEY}"
    assert call.headers["content-type"] == "application/json"


def test_patch_run_is_delivered(fake_api: FakeHackAgentAPI, client: HackAgentClient) -> None:
    run_id = str(uuid.uuid4())
    record = Record("run_update", "PATCH", f"/run/{run_id}", {"status": "RUNNING"}, run_id)
    assert client.send(record.request()) == Delivered(200, fake_api.run(run_id))


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
def test_retryable_statuses_are_transient(
    fake_api: FakeHackAgentAPI, client: HackAgentClient, status: int
) -> None:
    fake_api.inject(Fault.status(status))
    outcome = client.send(trace_record())
    assert isinstance(outcome, Transient)
    assert outcome.status == status


@pytest.mark.parametrize("status", [500, 400, 401, 404])
def test_final_statuses_are_rejected_with_the_reason(
    fake_api: FakeHackAgentAPI, client: HackAgentClient, status: int
) -> None:
    fake_api.inject(Fault.status(status))
    outcome = client.send(trace_record())
    assert isinstance(outcome, Rejected)
    assert outcome.status == status
    assert "injected fault" in outcome.reason


def test_invalid_record_is_rejected_by_the_api_as_400(client: HackAgentClient) -> None:
    outcome = client.send(trace_record(step_type="NOPE"))
    assert isinstance(outcome, Rejected)
    assert outcome.status == 400
    assert "step_type" in outcome.reason


def test_429_and_503_carry_retry_after_seconds_and_dates(
    fake_api: FakeHackAgentAPI, client: HackAgentClient
) -> None:
    fake_api.inject(Fault.status(429, retry_after=7))
    fake_api.inject(Fault.status(503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"))
    fake_api.inject(Fault.status(503, retry_after="whenever"))
    assert client.send(trace_record()) == Transient("HTTP 429", 7.0, 429)
    assert client.send(trace_record()) == Transient("HTTP 503", 0.0, 503)
    assert client.send(trace_record()) == Transient("HTTP 503", None, 503)


def test_hang_past_the_timeout_is_transient(fake_api: FakeHackAgentAPI) -> None:
    fake_api.inject(Fault.hang())
    with HackAgentClient(fake_api.base_url, KEY, timeout=0.2) as client:
        outcome = client.send(trace_record())
    fake_api.release()
    assert isinstance(outcome, Transient)
    assert "timeout" in outcome.reason


def test_hang_past_the_deadline_is_transient_within_it(fake_api: FakeHackAgentAPI) -> None:
    fake_api.inject(Fault.hang())
    with HackAgentClient(fake_api.base_url, KEY, timeout=5.0, deadline=0.3) as client:
        started = time.monotonic()
        outcome = client.send(trace_record())
        took = time.monotonic() - started
    fake_api.release()
    assert isinstance(outcome, Transient)
    assert "deadline" in outcome.reason
    assert took < 0.3 + 0.5


def test_a_borrowed_clients_timeouts_are_cut_to_the_deadline(fake_api: FakeHackAgentAPI) -> None:
    fake_api.inject(Fault.hang())
    with httpx.Client(base_url=fake_api.base_url, timeout=5.0) as http:
        started = time.monotonic()
        outcome = HackAgentClient.from_httpx(http, deadline=0.3).send(trace_record())
        took = time.monotonic() - started
    fake_api.release()
    assert isinstance(outcome, Transient)
    assert "timeout" in outcome.reason
    assert took < 0.3 + 0.5


def test_latency_under_the_deadline_is_delivered(fake_api: FakeHackAgentAPI) -> None:
    fake_api.inject(Fault.latency(150))
    with HackAgentClient(fake_api.base_url, KEY, deadline=1.0) as client:
        assert isinstance(client.send(trace_record()), Delivered)


def test_connection_reset_is_transient(fake_api: FakeHackAgentAPI, client: HackAgentClient) -> None:
    fake_api.inject(Fault.reset())
    assert isinstance(client.send(trace_record()), Transient)
    assert isinstance(client.send(trace_record()), Delivered)


def test_connection_refused_is_transient_and_recovers_on_restart(
    fake_api: FakeHackAgentAPI, client: HackAgentClient
) -> None:
    assert isinstance(client.send(trace_record()), Delivered)
    fake_api.stop()
    outcome = client.send(trace_record())
    assert isinstance(outcome, Transient)
    fake_api.start()
    assert isinstance(client.send(trace_record()), Delivered)


@pytest.mark.parametrize("how", ["json", "content_type"])
def test_malformed_success_is_still_delivered_without_a_body(
    fake_api: FakeHackAgentAPI, client: HackAgentClient, how: Any
) -> None:
    # The API accepted the call; retrying it would only create a duplicate.
    fake_api.inject(Fault.malformed_response(how))
    assert client.send(trace_record()) == Delivered(201, None)


def test_base_url_path_is_kept_and_slashes_are_joined_once(fake_api: FakeHackAgentAPI) -> None:
    for base in (fake_api.base_url, fake_api.base_url + "/"):
        with HackAgentClient(base, KEY) as client:
            assert isinstance(client.send(trace_record()), Delivered)
    with HackAgentClient(fake_api.base_url + "/api", KEY) as client:
        outcome = client.send(trace_record())
    assert isinstance(outcome, Rejected)
    assert fake_api.calls[-1].path.startswith("/api/result/")


def test_default_base_url_is_the_public_api() -> None:
    with HackAgentClient(api_key="x") as client:
        assert client.base_url == "https://api.hackagent.dev/"


def test_authenticated_client_is_read_by_duck_typing(fake_api: FakeHackAgentAPI) -> None:
    hackagent_like = SimpleNamespace(
        _base_url=fake_api.base_url,
        token=KEY,
        prefix="Bearer",
        auth_header_name="Authorization",
        _headers={"X-Extra": "1"},
        _timeout=httpx.Timeout(3.0),
        _verify_ssl=True,
    )
    client = HackAgentClient.from_any(hackagent_like)
    with client:
        assert isinstance(client.send(trace_record()), Delivered)
    assert fake_api.calls[0].headers["x-extra"] == "1"


def test_authenticated_client_with_custom_header_and_prefix(fake_api: FakeHackAgentAPI) -> None:
    odd = SimpleNamespace(
        _base_url=fake_api.base_url, token="t", prefix="Token", auth_header_name="X-Auth"
    )
    with HackAgentClient.from_any(odd) as client:
        client.send(trace_record())
    assert fake_api.calls[0].headers["x-auth"] == "Token t"


def test_borrowed_httpx_client_is_used_as_is_and_not_closed(fake_api: FakeHackAgentAPI) -> None:
    http = httpx.Client(base_url=fake_api.base_url, headers={"Authorization": f"Bearer {KEY}"})
    client = HackAgentClient.from_any(http)
    assert isinstance(client.send(trace_record()), Delivered)
    client.close()
    assert not http.is_closed
    http.close()


def test_httpx_client_without_base_url_is_refused() -> None:
    with httpx.Client() as http, pytest.raises(ValueError, match="base_url"):
        HackAgentClient.from_any(http)


@pytest.mark.parametrize("thing", [None, "https://api.hackagent.dev", 42, object()])
def test_from_any_refuses_other_things_with_a_clear_type_error(thing: object) -> None:
    with pytest.raises(TypeError, match=r"AuthenticatedClient, an httpx\.Client"):
        HackAgentClient.from_any(thing)


def test_from_any_refuses_an_async_client_saying_why() -> None:
    async_client = httpx.AsyncClient()
    with pytest.raises(TypeError, match="AsyncClient cannot be used"):
        HackAgentClient.from_any(async_client)


def test_from_any_returns_our_own_client_unchanged() -> None:
    with HackAgentClient(api_key="x") as client:
        assert HackAgentClient.from_any(client) is client


def test_calls_run_with_otel_instrumentation_suppressed(fake_api: FakeHackAgentAPI) -> None:
    seen: list[object] = []

    def hook(request: httpx.Request) -> None:
        seen.append(otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY))
        seen.append(otel_context.get_value(otel_context._SUPPRESS_HTTP_INSTRUMENTATION_KEY))

    http = httpx.Client(
        base_url=fake_api.base_url,
        headers={"Authorization": f"Bearer {KEY}"},
        event_hooks={"request": [hook]},
    )
    with http:
        HackAgentClient.from_httpx(http).send(trace_record())
    assert seen == [True, True]
    assert otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY) is None


def test_suppression_is_undone_after_the_block() -> None:
    with suppress_instrumentation():
        assert otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY) is True
    assert otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY) is None


def test_one_client_serves_concurrent_senders(
    fake_api: FakeHackAgentAPI, client: HackAgentClient
) -> None:
    result_ids = [str(uuid.uuid4()) for _ in range(4)]

    def send_all(result_id: str) -> None:
        for i in range(25):
            assert isinstance(client.send(trace_record(result_id, i)), Delivered)

    threads = [threading.Thread(target=send_all, args=(r,)) for r in result_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in result_ids:
        assert [t["sequence"] for t in fake_api.traces_for(r)] == list(range(25))


def test_delivery_imports_opentelemetry_only_inside_suppress_instrumentation() -> None:
    """Design rule: delivery has no OTel imports, except the one suppression helper."""
    import ast
    from pathlib import Path

    import hackagent_otel._delivery as delivery

    offenders: list[str] = []
    for source in Path(delivery.__file__).parent.glob("*.py"):
        tree = ast.parse(source.read_text())
        allowed: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "suppress_instrumentation":
                allowed |= {id(n) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(n.startswith("opentelemetry") for n in names) and id(node) not in allowed:
                offenders.append(f"{source.name}:{node.lineno}")
    assert offenders == []


def test_a_connection_the_server_closed_while_idle_is_replaced(
    fake_api: FakeHackAgentAPI, client: HackAgentClient
) -> None:
    assert isinstance(client.send(trace_record()), Delivered)
    fake_api.stop()  # cuts the kept-alive connection
    fake_api.start()
    assert isinstance(client.send(trace_record()), Delivered)


def test_a_refused_connection_is_transient_and_says_so(fake_api: FakeHackAgentAPI) -> None:
    fake_api.stop()
    with HackAgentClient(fake_api.base_url, KEY) as client:
        outcome = client.send(trace_record())
    assert isinstance(outcome, Transient)
    assert "ConnectError" in outcome.reason


def test_a_closed_client_reports_transient_without_calling(fake_api: FakeHackAgentAPI) -> None:
    client = HackAgentClient(fake_api.base_url, KEY)
    client.close()
    assert client.send(trace_record()) == Transient("client closed")
    assert fake_api.calls == []


def test_a_record_whose_path_cannot_be_sent_as_is_is_rejected_not_retried(
    client: HackAgentClient,
) -> None:
    outcome = client.send(trace_record("not a uuid"))

    assert isinstance(outcome, Rejected)
