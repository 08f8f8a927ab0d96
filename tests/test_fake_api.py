"""FakeHackAgentAPI answers the HackAgent contract and injects faults on demand."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Literal

import httpx
import pytest

from hackagent_otel.testing import STEP_TYPE_VALUES, FakeHackAgentAPI, Fault

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def rid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def http(fake_api: FakeHackAgentAPI) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake_api.base_url, headers=AUTH, timeout=5) as client:
        yield client


def trace(seq: int, step_type: str = "OTHER") -> dict[str, object]:
    return {"sequence": seq, "step_type": step_type, "content": {"step_name": f"s{seq}"}}


def test_create_trace_returns_201_with_trace_and_records_it(
    fake_api: FakeHackAgentAPI, http: httpx.Client
) -> None:
    result_id = rid()
    response = http.post(f"/result/{result_id}/trace", json=trace(1))
    assert response.status_code == 201
    body = response.json()
    assert isinstance(body["id"], int)
    assert body["result"] == result_id
    assert body["sequence"] == 1
    assert body["step_type"] == "OTHER"
    assert body["content"] == {"step_name": "s1"}
    assert body["timestamp"].endswith("Z")
    assert fake_api.traces_for(result_id) == [body]
    (call,) = fake_api.calls
    assert (call.method, call.path, call.status, call.faulted) == (
        "POST",
        f"/result/{result_id}/trace",
        201,
        False,
    )
    assert call.body == trace(1)
    assert call.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sequence": "1", "step_type": "OTHER", "content": {}}, "sequence"),
        ({"sequence": True, "step_type": "OTHER", "content": {}}, "sequence"),
        ({"sequence": 1, "step_type": "NOPE", "content": {}}, "step_type"),
        ({"sequence": 1, "step_type": "OTHER"}, "content"),
    ],
)
def test_invalid_trace_fields_are_400_naming_the_field(
    http: httpx.Client, body: dict[str, object], field: str
) -> None:
    response = http.post(f"/result/{rid()}/trace", json=body)
    assert response.status_code == 400
    assert field in response.json()


def test_every_step_type_value_is_accepted(http: httpx.Client) -> None:
    result_id = rid()
    for i, step_type in enumerate(sorted(STEP_TYPE_VALUES)):
        assert http.post(f"/result/{result_id}/trace", json=trace(i, step_type)).status_code == 201


def test_duplicate_sequence_is_accepted_but_listed_by_default(
    fake_api: FakeHackAgentAPI, http: httpx.Client
) -> None:
    result_id = rid()
    assert http.post(f"/result/{result_id}/trace", json=trace(1)).status_code == 201
    assert http.post(f"/result/{result_id}/trace", json=trace(1)).status_code == 201
    assert len(fake_api.traces_for(result_id)) == 2
    assert [t["sequence"] for t in fake_api.duplicate_traces()] == [1]


def test_duplicate_sequence_is_400_with_unique_sequences() -> None:
    with (
        FakeHackAgentAPI(api_key=KEY, unique_sequences=True) as api,
        httpx.Client(base_url=api.base_url, headers=AUTH) as http,
    ):
        result_id = rid()
        assert http.post(f"/result/{result_id}/trace", json=trace(1)).status_code == 201
        response = http.post(f"/result/{result_id}/trace", json=trace(1))
        assert response.status_code == 400
        assert "non_field_errors" in response.json()
        assert len(api.traces_for(result_id)) == 1
        assert len(api.duplicate_traces()) == 1


def test_patch_run_validates_status_and_returns_run(
    fake_api: FakeHackAgentAPI, http: httpx.Client
) -> None:
    run_id = rid()
    response = http.patch(f"/run/{run_id}", json={"status": "RUNNING"})
    assert response.status_code == 200
    assert response.json()["status"] == "RUNNING"
    assert (fake_api.run(run_id) or {})["status"] == "RUNNING"
    assert http.patch(f"/run/{run_id}", json={"status": "DONE"}).status_code == 400


def test_patch_result_validates_evaluation_status_and_notes(
    fake_api: FakeHackAgentAPI, http: httpx.Client
) -> None:
    result_id = rid()
    ok = http.patch(
        f"/result/{result_id}",
        json={"evaluation_status": "ERROR_TEST_FRAMEWORK", "evaluation_notes": "boom"},
    )
    assert ok.status_code == 200
    assert (fake_api.result(result_id) or {})["evaluation_notes"] == "boom"
    assert http.patch(f"/result/{result_id}", json={"evaluation_status": "X"}).status_code == 400
    assert http.patch(f"/result/{result_id}", json={"evaluation_notes": None}).status_code == 400
    assert http.patch(f"/result/{result_id}", json={"latency_ms": 3}).status_code == 200


def test_create_result_under_run_needs_a_run_uuid(http: httpx.Client) -> None:
    run_id = rid()
    created = http.post(f"/run/{run_id}/result", json={"run": run_id, "latency_ms": 5})
    assert created.status_code == 201
    assert created.json()["run"] == run_id
    uuid.UUID(created.json()["id"])
    assert http.post(f"/run/{run_id}/result", json={"run": "nope"}).status_code == 400


def test_missing_or_wrong_bearer_token_is_401(fake_api: FakeHackAgentAPI) -> None:
    with httpx.Client(base_url=fake_api.base_url) as anon:
        assert anon.post(f"/result/{rid()}/trace", json=trace(1)).status_code == 401
        wrong = {"Authorization": "Bearer other"}
        assert anon.patch(f"/run/{rid()}", json={}, headers=wrong).status_code == 401
    assert fake_api.traces == []


def test_bad_uuid_and_unknown_paths_are_404_and_wrong_method_405(http: httpx.Client) -> None:
    assert http.post("/result/not-a-uuid/trace", json=trace(1)).status_code == 404
    assert http.post("/nothing/here", json={}).status_code == 404
    assert http.get(f"/result/{rid()}/trace").status_code == 405


def test_invalid_json_is_400(http: httpx.Client) -> None:
    response = http.post(
        f"/result/{rid()}/trace",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400


@pytest.mark.parametrize("status", [500, 502, 503, 504, 400, 401, 404])
def test_injected_status_is_answered_once_then_normal_service(
    fake_api: FakeHackAgentAPI, http: httpx.Client, status: int
) -> None:
    fake_api.inject(Fault.status(status), times=1)
    result_id = rid()
    assert http.post(f"/result/{result_id}/trace", json=trace(1)).status_code == status
    assert http.post(f"/result/{result_id}/trace", json=trace(1)).status_code == 201
    faulted = [c for c in fake_api.calls if c.faulted]
    assert [(c.status, c.fault) for c in faulted] == [(status, "status")]
    assert len(fake_api.traces_for(result_id)) == 1


def test_retry_after_is_sent_as_seconds_or_http_date(
    fake_api: FakeHackAgentAPI, http: httpx.Client
) -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    fake_api.inject(Fault.status(429, retry_after=7))
    fake_api.inject(Fault.status(503, retry_after=when))
    first = http.post(f"/result/{rid()}/trace", json=trace(1))
    second = http.post(f"/result/{rid()}/trace", json=trace(1))
    assert (first.status_code, first.headers["retry-after"]) == (429, "7")
    assert (second.status_code, second.headers["retry-after"]) == (
        503,
        "Wed, 02 Jan 2030 03:04:05 GMT",
    )


def test_faults_can_target_a_path_prefix_and_method(
    fake_api: FakeHackAgentAPI, http: httpx.Client
) -> None:
    fake_api.inject(Fault.status(502), times=None, path_prefix="/run/", method="PATCH")
    assert http.post(f"/result/{rid()}/trace", json=trace(1)).status_code == 201
    assert http.patch(f"/run/{rid()}", json={"status": "RUNNING"}).status_code == 502
    assert http.patch(f"/run/{rid()}", json={"status": "RUNNING"}).status_code == 502
    fake_api.clear_faults()
    assert http.patch(f"/run/{rid()}", json={"status": "RUNNING"}).status_code == 200


def test_latency_fault_and_global_latency_delay_the_answer(
    fake_api: FakeHackAgentAPI, http: httpx.Client
) -> None:
    fake_api.inject(Fault.latency(150))
    started = time.monotonic()
    assert http.post(f"/result/{rid()}/trace", json=trace(1)).status_code == 201
    assert time.monotonic() - started >= 0.15
    assert fake_api.calls[-1].fault == "latency"
    fake_api.set_latency(100)
    started = time.monotonic()
    assert http.patch(f"/run/{rid()}", json={}).status_code == 200
    assert time.monotonic() - started >= 0.1


def test_hang_gives_no_answer_until_released_and_stores_nothing(
    fake_api: FakeHackAgentAPI, http: httpx.Client
) -> None:
    fake_api.inject(Fault.hang())
    result_id = rid()
    with pytest.raises(httpx.ReadTimeout):
        http.post(f"/result/{result_id}/trace", json=trace(1), timeout=0.3)
    fake_api.release()
    assert fake_api.wait_for(1, timeout=2)
    assert fake_api.calls[0].fault == "hang"
    assert fake_api.calls[0].status is None
    assert fake_api.traces_for(result_id) == []


def test_timed_hang_closes_the_connection_without_answer(
    fake_api: FakeHackAgentAPI, http: httpx.Client
) -> None:
    fake_api.inject(Fault.hang(seconds=0.2))
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(f"/result/{rid()}/trace", json=trace(1), timeout=3)


def test_reset_fault_aborts_the_connection(fake_api: FakeHackAgentAPI, http: httpx.Client) -> None:
    fake_api.inject(Fault.reset())
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        http.post(f"/result/{rid()}/trace", json=trace(1))
    assert fake_api.calls[0].fault == "reset"
    assert http.post(f"/result/{rid()}/trace", json=trace(1)).status_code == 201


@pytest.mark.parametrize("how", ["json", "content_type"])
def test_malformed_response_keeps_success_status_but_breaks_the_body(
    fake_api: FakeHackAgentAPI, http: httpx.Client, how: Literal["json", "content_type"]
) -> None:
    fake_api.inject(Fault.malformed_response(how))
    result_id = rid()
    response = http.post(f"/result/{result_id}/trace", json=trace(1))
    assert response.status_code == 201
    with pytest.raises(ValueError):  # noqa: PT011 - JSONDecodeError is a ValueError
        response.json()
    assert len(fake_api.traces_for(result_id)) == 1
    assert fake_api.calls[0].fault == "malformed"


def test_stop_refuses_connections_and_start_serves_on_the_same_port(
    fake_api: FakeHackAgentAPI,
) -> None:
    port = fake_api.port
    fake_api.stop()
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))
    fake_api.start()
    assert fake_api.port == port
    with httpx.Client(base_url=fake_api.base_url, headers=AUTH) as http:
        assert http.patch(f"/run/{rid()}", json={}).status_code == 200


def test_stop_cuts_open_keep_alive_connections(
    fake_api: FakeHackAgentAPI, http: httpx.Client
) -> None:
    assert http.patch(f"/run/{rid()}", json={}).status_code == 200
    fake_api.stop()
    with pytest.raises(httpx.TransportError):
        http.patch(f"/run/{rid()}", json={})


def test_wait_for_predicate_sees_calls_made_from_other_threads(fake_api: FakeHackAgentAPI) -> None:
    result_id = rid()

    def send() -> None:
        with httpx.Client(base_url=fake_api.base_url, headers=AUTH) as client:
            for i in range(20):
                client.post(f"/result/{result_id}/trace", json=trace(i))

    worker = threading.Thread(target=send)
    worker.start()
    assert fake_api.wait_for(lambda: len(fake_api.traces_for(result_id)) == 20, timeout=5)
    worker.join()
    assert not fake_api.wait_for(21, timeout=0.1)


def test_sequential_keep_alive_calls_are_fast_in_process(
    fake_api: FakeHackAgentAPI, http: httpx.Client
) -> None:
    # In-process, sharing the interpreter with httpx; the stand-alone figure is higher.
    result_id = rid()
    count = 600
    started = time.perf_counter()
    for i in range(count):
        http.post(f"/result/{result_id}/trace", json=trace(i))
    rate = count / (time.perf_counter() - started)
    assert rate > 500, rate  # generous floor for slow CI machines


def test_reset_clears_calls_and_data(fake_api: FakeHackAgentAPI, http: httpx.Client) -> None:
    http.post(f"/result/{rid()}/trace", json=trace(1))
    fake_api.reset()
    assert fake_api.calls == []
    assert fake_api.traces == []


def test_http_date_retry_after_in_the_past_is_passed_through(
    fake_api: FakeHackAgentAPI, http: httpx.Client
) -> None:
    fake_api.inject(Fault.status(503, retry_after=datetime.now(timezone.utc) - timedelta(1)))
    assert http.get("/x").headers["retry-after"].endswith("GMT")


def test_control_endpoints_report_counts_and_each_call_with_its_arrival_time() -> None:
    result_id = str(uuid.uuid4())
    with (
        FakeHackAgentAPI("k", control_endpoints=True) as api,
        httpx.Client(base_url=api.base_url, headers={"Authorization": "Bearer k"}) as client,
    ):
        before = time.time()
        client.post(
            f"/result/{result_id}/trace",
            json={"sequence": 7, "step_type": "OTHER", "content": {}},
        )
        stats = client.get("/_fake/stats").json()
        (call,) = client.get("/_fake/calls").json()

    assert stats == {"calls": 1, "traces": 1}
    assert call["path"] == f"/result/{result_id}/trace"
    assert (call["method"], call["status"], call["sequence"]) == ("POST", 201, 7)
    assert before <= call["received_at"] <= time.time()


def test_control_endpoints_are_off_by_default(fake_api: FakeHackAgentAPI) -> None:
    assert httpx.get(f"{fake_api.base_url}/_fake/calls").status_code == 404
