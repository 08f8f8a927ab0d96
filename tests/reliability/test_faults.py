"""Every way the HackAgent API can fail, injected on the pipeline's own records.

For each fault: the pipeline's return value and its own exception are unchanged;
transient faults (502, 503, 504, 429 with Retry-After, a hang past the client timeout, a
reset connection, a refused connection) end in delivery; final ones (400, 401, 404, 500)
end in the outbox's rejected rows with their status; a malformed success answer counts
as delivered (the API took the record). In every case the counts add up: sent + pending
+ rejected (+ dropped, which stays 0) = records produced, per ``Telemetry.stats()``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from apps.scenario import run_seed_scenario
from hackagent_otel import StepTracker
from hackagent_otel.testing import FakeHackAgentAPI, Fault

from .conftest import CLIENT_TIMEOUT, Harness, sequences_in_order

#: What the user's pipeline returns, and raises, through all of this.
ANSWER = object()


class PipelineError(Exception):
    """The user's own failure, which must come out of the tracker untouched."""


def pipeline_that_returns(tracker: StepTracker) -> object:
    run_seed_scenario(tracker)  # 8 records
    with tracker.track_step("Answer", "STEP3_ANSWER", config={"model": "m"}):
        return ANSWER  # 2 records


def pipeline_that_raises(tracker: StepTracker, error: PipelineError) -> None:
    with tracker.track_step("Crash", "STEP4_CRASH"):  # 3 records: start, PATCH, summary
        raise error


#: Records the two pipelines make together.
RECORDS = 13


@dataclass(frozen=True)
class Case:
    """One fault: how to apply it, and whether the faulted record ends delivered."""

    name: str
    apply: Callable[[FakeHackAgentAPI, str], None]
    final_status: int | None = None  # the status a rejected row keeps; None: delivered
    retry_after: float | None = None


def on_traces(fault: Fault, times: int) -> Callable[[FakeHackAgentAPI, str], None]:
    def apply(api: FakeHackAgentAPI, result_id: str) -> None:
        api.inject(fault, times=times, path_prefix=f"/result/{result_id}/trace")

    return apply


def refused(api: FakeHackAgentAPI, result_id: str) -> None:
    api.stop()


CASES = [
    Case("500", on_traces(Fault.status(500), 1), final_status=500),
    Case("502", on_traces(Fault.status(502), 3)),
    Case("503", on_traces(Fault.status(503), 3)),
    Case("504", on_traces(Fault.status(504), 3)),
    Case("429-retry-after", on_traces(Fault.status(429, retry_after=0.5), 2), retry_after=0.5),
    Case("400", on_traces(Fault.status(400), 1), final_status=400),
    Case("401", on_traces(Fault.status(401), 1), final_status=401),
    Case("404", on_traces(Fault.status(404), 1), final_status=404),
    Case("hang-past-timeout", on_traces(Fault.hang(seconds=10 * CLIENT_TIMEOUT), 2)),
    Case("reset-connection", on_traces(Fault.reset(), 3)),
    Case("refused-connection", refused),
    Case("malformed-json", on_traces(Fault.malformed_response("json"), 3)),
    Case("malformed-content-type", on_traces(Fault.malformed_response("content_type"), 3)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_api_fault_leaves_the_pipeline_alone_and_every_record_accounted_for(
    harness: Harness, case: Case
) -> None:
    api = harness.api
    tracker = harness.tracker()
    result_id = tracker.context.parent_result_id
    assert result_id is not None
    case.apply(api, result_id)

    started = time.monotonic()
    returned = pipeline_that_returns(tracker)
    error = PipelineError("the user's own failure")
    with pytest.raises(PipelineError) as raised:
        pipeline_that_raises(tracker, error)
    took = time.monotonic() - started

    assert returned is ANSWER
    assert raised.value is error
    assert raised.value.args == ("the user's own failure",)
    assert took < 1.0, f"the pipeline waited on the API: {took:.2f}s"

    if case.name == "refused-connection":
        # Down: flushing commits everything to the outbox instead of waiting for the API.
        assert harness.provider.force_flush(10_000)
        down = harness.accounting()
        assert down.adds_up, down
        assert down.pending == RECORDS, down
        assert down.sent == 0, down
        api.start()

    final = harness.wait_settled()
    assert final.produced == RECORDS
    assert final.adds_up, final
    assert final.settled, final
    assert final.dropped == 0
    assert harness.outbox is not None
    rejected_rows = harness.outbox.list_rejected()
    traces = api.traces_for(result_id)
    if case.final_status is None:
        assert final.sent == RECORDS, final
        assert final.rejected == 0, final
        assert rejected_rows == []
        assert [t["sequence"] for t in traces] == [1, 2, 3, 4, 5, 6, 7, 8]
    else:
        assert final.sent == RECORDS - 1, final
        assert final.rejected == 1, final
        (row,) = rejected_rows
        assert row.status == case.final_status
        assert row.last_error is not None
        assert f"HTTP {case.final_status}" in row.last_error
        assert row.call.parsed_body()["sequence"] == 1
        assert [t["sequence"] for t in traces] == [2, 3, 4, 5, 6, 7, 8]
    assert sequences_in_order(traces)
    assert api.duplicate_traces() == []
    assert (api.run(harness.run_id) or {}).get("status") == "COMPLETED"

    if case.retry_after is not None:
        calls = [c for c in api.calls if c.path == f"/result/{result_id}/trace"]
        for earlier, later in itertools.pairwise(calls):
            if earlier.status == 429:
                gap = later.received_at - earlier.received_at
                assert gap >= case.retry_after * 0.9, f"Retry-After not honoured: {gap:.2f}s"
