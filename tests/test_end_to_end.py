"""The whole pipeline in process: tracker -> spans -> records -> real HTTP to a fake API.

What the issue promises a user: the calls the original tracker made, with live start
records, independent of the sampler, through the user's own client, and never lost when
the API is down, hangs, or the process is killed or forks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

import hackagent_otel
from apps.scenario import (
    CANARY,
    SCENARIO_RECORDS,
    AuthenticatedClientLike,
    expected_result_calls,
    expected_run_calls,
    run_seed_scenario,
    without_otel,
)
from hackagent_otel import StepTracker, TrackingContext, trace_id_hex_for_run
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel._outbox_files import outbox_path_for_target
from hackagent_otel.testing import FakeHackAgentAPI, Fault
from otel_fixtures import ConfigureAPI, ConfigureOTel, OTel, api_calls

APPS = Path(__file__).resolve().parent / "apps"


def tracker_for(run_id: str, result_id: str, client: Any = None) -> StepTracker:
    return StepTracker(TrackingContext(client=client, run_id=run_id, parent_result_id=result_id))


def assert_scenario_delivered(api: FakeHackAgentAPI, run_id: str, result_id: str) -> None:
    """Exactly the original's calls, in order per result and per run."""
    assert api_calls(api, f"/result/{result_id}") == expected_result_calls(result_id)
    assert api_calls(api, f"/run/{run_id}") == expected_run_calls(run_id)


def scenario_arrived(api: FakeHackAgentAPI, run_id: str, result_id: str) -> bool:
    return len(api_calls(api, f"/result/{result_id}")) >= 6 and (
        len(api_calls(api, f"/run/{run_id}")) >= 2
    )


def api_outbox(default: Path, api: FakeHackAgentAPI) -> Path:
    """Where records for ``api`` wait, beside the default outbox ``default``."""
    return outbox_path_for_target(default, api.base_url)


def app_env(api: FakeHackAgentAPI, outbox: Path, **extra: str) -> dict[str, str]:
    """The environment of a subprocess app: no tracing configuration of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HACKAGENT_", "OTEL_"))}
    env.update(
        APP_API_URL=api.base_url,
        APP_API_KEY=api.api_key,
        HACKAGENT_OUTBOX_PATH=str(outbox),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_app(mode: str, run_id: str, result_id: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, str(APPS / "pipeline.py"), mode, run_id, result_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- parity ------------------------------------------------------------------------------


def test_the_seed_scenario_reaches_the_api_as_the_calls_the_original_makes(
    configure_api: ConfigureAPI, fake_api: FakeHackAgentAPI, run_id: str, result_id: str
) -> None:
    configure_api(hackagent_base_url=fake_api.base_url, hackagent_api_key=fake_api.api_key)

    run_seed_scenario(tracker_for(run_id, result_id))
    assert hackagent_otel.force_flush(5_000)

    assert_scenario_delivered(fake_api, run_id, result_id)
    for call in fake_api.calls:
        assert call.headers["authorization"] == f"Bearer {fake_api.api_key}"
        assert call.headers["content-type"] == "application/json"
    assert CANARY not in json.dumps([c.body for c in fake_api.calls])
    # The one addition: each trace says which span it came from.
    traces = fake_api.traces_for(result_id)
    assert [t["sequence"] for t in traces] == [1, 2, 3, 4]
    for trace in traces:
        otel = trace["content"]["otel"]
        assert otel["trace_id"] == trace_id_hex_for_run(run_id)
        assert len(otel["span_id"]) == 16
    assert traces[0]["content"]["otel"]["span_id"] == traces[1]["content"]["otel"]["span_id"]
    assert "duration_ms" in traces[1]["content"]["otel"]


def test_every_record_is_delivered_once(
    api_otel: OTel, fake_api: FakeHackAgentAPI, run_id: str, result_id: str
) -> None:
    run_seed_scenario(tracker_for(run_id, result_id))
    hackagent_otel.shutdown()

    assert fake_api.duplicate_traces() == []
    assert len(fake_api.calls) == SCENARIO_RECORDS


# -- live records ------------------------------------------------------------------------


def test_a_long_steps_start_record_arrives_while_the_step_is_still_running(
    api_otel: OTel, fake_api: FakeHackAgentAPI, run_id: str, result_id: str
) -> None:
    tracker = tracker_for(run_id, result_id)
    with tracker.track_step("Long", "STEP_LONG", config={"n": 1}):
        started = time.monotonic()
        assert fake_api.wait_for(lambda: len(fake_api.traces_for(result_id)) == 1, timeout=1.0)
        seen_after = time.monotonic() - started
        still_running = fake_api.traces_for(result_id)
    assert seen_after < 1.0
    assert [t["content"]["step_name"] for t in still_running] == ["Long"]
    assert fake_api.wait_for(lambda: len(fake_api.traces_for(result_id)) == 2, timeout=2.0)


def test_update_run_status_running_reaches_the_api_before_the_run_ends(
    api_otel: OTel, fake_api: FakeHackAgentAPI, run_id: str, result_id: str
) -> None:
    tracker = tracker_for(run_id, result_id)
    assert tracker.update_run_status("RUNNING")
    assert fake_api.wait_for(lambda: (fake_api.run(run_id) or {}).get("status") == "RUNNING", 1.0)
    with tracker.track_step("Work", "STEP"):
        pass
    assert fake_api.run(run_id)["status"] == "RUNNING"  # type: ignore[index]
    tracker.update_run_status("COMPLETED")
    assert fake_api.wait_for(lambda: fake_api.run(run_id)["status"] == "COMPLETED", 2.0)  # type: ignore[index]


def test_records_arrive_when_the_users_sampler_drops_every_span(
    configure_api: ConfigureAPI, fake_api: FakeHackAgentAPI, run_id: str, result_id: str
) -> None:
    otel = configure_api(sampler=ALWAYS_OFF)

    run_seed_scenario(tracker_for(run_id, result_id))
    assert hackagent_otel.force_flush(5_000)

    assert otel.spans() == []  # Jaeger sees what the sampler chose: nothing
    assert_scenario_delivered(fake_api, run_id, result_id)


# -- drop-in clients ---------------------------------------------------------------------


def test_an_httpx_client_on_the_context_delivers_to_its_base_url_with_its_token(
    otel: OTel, fake_api: FakeHackAgentAPI, run_id: str, result_id: str, env_outbox_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {fake_api.api_key}"}
    with httpx.Client(base_url=fake_api.base_url, headers=headers) as client:
        run_seed_scenario(tracker_for(run_id, result_id, client))
        assert hackagent_otel.force_flush(5_000)
        assert_scenario_delivered(fake_api, run_id, result_id)
        assert not env_outbox_path.exists()  # nothing went to the default (no API) target


def test_an_authenticated_client_on_the_context_delivers_with_its_token(
    otel: OTel, fake_api: FakeHackAgentAPI, run_id: str, result_id: str
) -> None:
    client = AuthenticatedClientLike(fake_api.base_url, fake_api.api_key)

    run_seed_scenario(tracker_for(run_id, result_id, client))
    assert hackagent_otel.force_flush(5_000)

    assert_scenario_delivered(fake_api, run_id, result_id)
    assert {c.headers["authorization"] for c in fake_api.calls} == {f"Bearer {fake_api.api_key}"}


def test_a_process_that_never_calls_configure_delivers_before_it_exits(
    fake_api: FakeHackAgentAPI, tmp_path: Path, run_id: str, result_id: str
) -> None:
    run_app("implicit", run_id, result_id, app_env(fake_api, tmp_path / "outbox.sqlite3"))

    assert fake_api.wait_for(lambda: scenario_arrived(fake_api, run_id, result_id), 2.0)
    assert_scenario_delivered(fake_api, run_id, result_id)


# -- the API down, hanging, a killed process, a fork --------------------------------------


def test_records_made_while_the_api_is_down_are_delivered_in_order_when_it_returns(
    api_otel: OTel, fake_api: FakeHackAgentAPI, run_id: str, result_id: str
) -> None:
    fake_api.stop()
    run_seed_scenario(tracker_for(run_id, result_id))
    assert hackagent_otel.force_flush(15_000)  # in the outbox now
    assert fake_api.calls == []

    fake_api.start()

    assert fake_api.wait_for(lambda: scenario_arrived(fake_api, run_id, result_id), 10.0)
    assert_scenario_delivered(fake_api, run_id, result_id)


def test_records_left_in_the_outbox_are_delivered_by_the_next_process(
    configure_api: ConfigureAPI,
    fake_api: FakeHackAgentAPI,
    env_outbox_path: Path,
    run_id: str,
    result_id: str,
) -> None:
    configure_api()
    fake_api.stop()
    run_seed_scenario(tracker_for(run_id, result_id))
    hackagent_otel.shutdown()
    with Outbox(api_outbox(env_outbox_path, fake_api)) as outbox:
        assert outbox.counts().pending == SCENARIO_RECORDS

    fake_api.start()
    configure_api()  # "the next process": a fresh set-up on the same outbox
    later = str(uuid.uuid4())
    with tracker_for(run_id, later).track_step("Next run", "STEP"):
        pass

    assert fake_api.wait_for(lambda: scenario_arrived(fake_api, run_id, result_id), 5.0)
    assert_scenario_delivered(fake_api, run_id, result_id)
    assert fake_api.wait_for(lambda: len(fake_api.traces_for(later)) == 2, 5.0)


def spool_then_sigkill(
    api: FakeHackAgentAPI, env: dict[str, str], run_id: str, result_id: str
) -> Path:
    """Run the scenario in a process while the API is down, SIGKILL it once its records
    are in the outbox, and return the outbox."""
    outbox = api_outbox(Path(env["HACKAGENT_OUTBOX_PATH"]), api)
    api.stop()
    app = subprocess.Popen(
        [sys.executable, str(APPS / "pipeline.py"), "spool", run_id, result_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdout is not None
        assert app.stdout.readline().strip() == "flushed"
    finally:  # at once: force_flush() returned, so every record is committed
        app.send_signal(signal.SIGKILL)
        app.wait(timeout=10)
    assert app.returncode == -signal.SIGKILL
    with Outbox(outbox) as box:
        assert box.counts().pending == SCENARIO_RECORDS
    api.start()
    return outbox


def test_records_spooled_before_a_sigkill_are_delivered_by_the_next_process(
    fake_api: FakeHackAgentAPI, tmp_path: Path, run_id: str, result_id: str
) -> None:
    env = app_env(fake_api, tmp_path / "outbox.sqlite3", APP_LINGER="1.5")
    outbox = spool_then_sigkill(fake_api, env, run_id, result_id)

    next_run, next_result = str(uuid.uuid4()), str(uuid.uuid4())
    run_app("configured", next_run, next_result, env)

    assert fake_api.wait_for(lambda: scenario_arrived(fake_api, run_id, result_id), 2.0)
    assert_scenario_delivered(fake_api, run_id, result_id)
    assert api_calls(fake_api, f"/result/{next_result}") == expected_result_calls(next_result)
    with Outbox(outbox) as box:
        assert box.counts().pending == 0


def test_a_short_lived_next_process_delivers_the_records_a_killed_one_left(
    fake_api: FakeHackAgentAPI, tmp_path: Path, run_id: str, result_id: str
) -> None:
    env = app_env(fake_api, tmp_path / "outbox.sqlite3")
    outbox = spool_then_sigkill(fake_api, env, run_id, result_id)

    # It exits as soon as its run is done.
    next_result = str(uuid.uuid4())
    run_app("configured", str(uuid.uuid4()), next_result, env)

    with Outbox(outbox) as box:
        assert box.counts().pending == 0
    assert_scenario_delivered(fake_api, run_id, result_id)
    assert api_calls(fake_api, f"/result/{next_result}") == expected_result_calls(next_result)


def test_shutdown_returns_within_seconds_while_the_api_hangs_and_keeps_the_records(
    api_otel: OTel, fake_api: FakeHackAgentAPI, env_outbox_path: Path, run_id: str, result_id: str
) -> None:
    fake_api.inject(Fault.hang(), times=None)
    run_seed_scenario(tracker_for(run_id, result_id))
    assert fake_api.wait_for(1, 2.0)  # a call is hanging

    started = time.monotonic()
    hackagent_otel.shutdown()
    took = time.monotonic() - started

    assert took < 6.0
    with Outbox(api_outbox(env_outbox_path, fake_api)) as outbox:
        assert outbox.counts().pending == SCENARIO_RECORDS


def test_a_process_exits_in_bounded_time_while_the_api_hangs(
    fake_api: FakeHackAgentAPI, tmp_path: Path, run_id: str, result_id: str
) -> None:
    fake_api.inject(Fault.hang(), times=None)
    env = app_env(fake_api, tmp_path / "outbox.sqlite3")
    app = subprocess.Popen(
        [sys.executable, str(APPS / "pipeline.py"), "configured", run_id, result_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert app.stdout is not None
    assert app.stdout.readline().strip() == "done"
    done_at = time.monotonic()
    app.wait(timeout=20)
    exit_took = time.monotonic() - done_at

    assert app.returncode == 0
    assert exit_took < 7.0
    with Outbox(api_outbox(tmp_path / "outbox.sqlite3", fake_api)) as outbox:
        assert outbox.counts().pending == SCENARIO_RECORDS


def run_fork_app(api: FakeHackAgentAPI, tmp_path: Path, run_id: str, result_id: str) -> str:
    """Run the fork app; return the child's result id once both processes have exited."""
    api.set_latency(20)  # the parent's records are still queued when it forks
    out = run_app("fork", run_id, result_id, app_env(api, tmp_path / "outbox.sqlite3"))
    return str(json.loads(out.splitlines()[0])["child_result"])


def test_after_a_fork_the_parents_records_arrive_once_and_the_childs_are_kept(
    fake_api: FakeHackAgentAPI, tmp_path: Path, run_id: str, result_id: str
) -> None:
    child_result = run_fork_app(fake_api, tmp_path, run_id, result_id)

    assert fake_api.wait_for(lambda: len(fake_api.traces_for(result_id)) >= 4, 2.0)
    assert api_calls(fake_api, f"/result/{result_id}") == expected_result_calls(result_id)
    sequences = Counter(t["sequence"] for t in fake_api.traces_for(result_id))
    assert sequences == {1: 1, 2: 1, 3: 1, 4: 1}
    # The child's records: each delivered once or waiting in the outbox, never lost.
    delivered = api_calls(fake_api, f"/result/{child_result}")
    with Outbox(api_outbox(tmp_path / "outbox.sqlite3", fake_api)) as outbox:
        pending: list[tuple[str, str, Any]] = [
            (r.call.method, r.call.path, without_otel(r.call.parsed_body()))
            for r in outbox.list_pending()
            if r.call.ordering_key == child_result
        ]
    assert sorted(map(repr, delivered + pending)) == sorted(
        map(repr, expected_result_calls(child_result))
    )


def test_a_forked_childs_records_are_delivered_by_the_child(
    fake_api: FakeHackAgentAPI, tmp_path: Path, run_id: str, result_id: str
) -> None:
    child_result = run_fork_app(fake_api, tmp_path, run_id, result_id)

    assert fake_api.wait_for(lambda: len(fake_api.traces_for(child_result)) >= 4, 2.0)
    assert api_calls(fake_api, f"/result/{child_result}") == expected_result_calls(child_result)
    assert Counter(t["sequence"] for t in fake_api.traces_for(child_result)) == {
        1: 1,
        2: 1,
        3: 1,
        4: 1,
    }
    assert len(fake_api.calls) == 2 * SCENARIO_RECORDS


# -- accounting ----------------------------------------------------------------------------


def test_sent_pending_and_rejected_add_up_to_the_records_made(
    api_otel: OTel, fake_api: FakeHackAgentAPI, env_outbox_path: Path, run_id: str
) -> None:
    # The tracking counters are the process's: only what this test adds is its own.
    errors_before = api_otel.telemetry.stats()["tracking"]["internal_errors"]
    fake_api.inject(Fault.status(400), times=2, path_prefix="/result/")
    fake_api.inject(Fault.status(503), times=2, path_prefix="/run/")
    results = [str(uuid.uuid4()) for _ in range(3)]
    for result in results:
        run_seed_scenario(tracker_for(run_id, result))
    assert hackagent_otel.force_flush(10_000)
    # The API hangs for the last records: shutdown keeps them pending.
    fake_api.inject(Fault.hang(), times=None)
    last = tracker_for(run_id, str(uuid.uuid4()))
    with last.track_step("Late", "STEP"):
        assert fake_api.wait_for(lambda: any(c.fault == "hang" for c in fake_api.calls), 2.0)
    telemetry = api_otel.telemetry
    hackagent_otel.shutdown()

    stats = telemetry.stats()
    made = stats["mapping"]["records"]
    assert made == 3 * SCENARIO_RECORDS + 2
    assert stats["mapping"]["unmappable"] == 0
    (delivery,) = stats["delivery"]
    with Outbox(api_outbox(env_outbox_path, fake_api)) as outbox:
        counts = outbox.counts()
    delivered = [c for c in fake_api.calls if c.status is not None and c.status < 300]
    assert delivery["sent"] == len(delivered)
    assert delivery["rejected"] == counts.rejected == 2
    assert delivery["retried"] >= 2
    assert delivery["dropped"] == 0
    assert counts.pending == 2
    assert delivery["sent"] + counts.pending + counts.rejected == made
    assert stats["tracking"]["internal_errors"] == errors_before


def test_without_an_api_records_wait_in_the_outbox(
    configure_otel: ConfigureOTel, env_outbox_path: Path, run_id: str, result_id: str
) -> None:
    telemetry = configure_otel().telemetry
    run_seed_scenario(tracker_for(run_id, result_id))
    hackagent_otel.shutdown()

    with Outbox(env_outbox_path) as outbox:
        pending = outbox.list_pending()
    bodies = [
        (r.call.method, r.call.path, without_otel(r.call.parsed_body()))
        for r in pending
        if r.call.ordering_key == result_id
    ]
    assert bodies == expected_result_calls(result_id)
    assert telemetry.stats()["mapping"]["records"] == len(pending) == SCENARIO_RECORDS


# -- child processes ---------------------------------------------------------------------


def _all_delivered_in_order(api: FakeHackAgentAPI, results: list[str], per_result: int) -> int:
    """Every record of every result arrived, first arrivals in sequence order; returns
    how many arrived twice (a child stopped after the API took a record and before its
    outbox row was settled: at least once, never lost)."""
    for result in results:
        arrived = [t["sequence"] for t in api.traces_for(result)]
        first = list(dict.fromkeys(arrived))
        assert first == list(range(1, per_result + 1)), (result, arrived)
    return len(api.duplicate_traces())


def _push_what_children_left(api: FakeHackAgentAPI, outbox: Path) -> None:
    """What a child's drain had not sent before it exited waits in the outbox: the
    README's recovery path delivers it."""
    from hackagent_otel._delivery.client import HackAgentClient
    from hackagent_otel._delivery.push import push

    if outbox.exists():
        with Outbox(outbox) as box, HackAgentClient(api.base_url, api.api_key) as client:
            assert push(box, client).complete


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_records_made_in_multiprocessing_children_reach_the_api_or_the_outbox(
    api_otel: OTel, fake_api: FakeHackAgentAPI, env_outbox_path: Path, method: str
) -> None:
    """Pool workers and Process children end through os._exit (or are terminated):
    their records are committed to the outbox as they are made, so none is lost."""
    import multiprocessing

    from apps.children import RECORDS_PER_CHILD, configure_child, tracked_steps

    context = multiprocessing.get_context(method)
    run_id = str(uuid.uuid4())
    tasks = [(run_id, str(uuid.uuid4())) for _ in range(6)]
    outbox = api_outbox(env_outbox_path, fake_api)
    init = (fake_api.base_url, fake_api.api_key, str(env_outbox_path))
    initializer = None if method == "fork" else configure_child
    pool = context.Pool(3, initializer=initializer, initargs=init if initializer else ())
    try:
        pids = pool.map(tracked_steps, tasks)
    finally:
        pool.terminate()  # what `with Pool()` does: SIGTERM to the workers
        pool.join()
    children = [(run_id, str(uuid.uuid4())) for _ in range(2)]
    start = context.Process  # type: ignore[attr-defined]
    processes = [start(target=_child_main, args=(method, init, ids)) for ids in children]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    assert len(set(pids)) >= 1
    _push_what_children_left(fake_api, outbox)
    results = [ids[1] for ids in tasks + children]
    duplicates = _all_delivered_in_order(fake_api, results, RECORDS_PER_CHILD)
    print(f"\n{method}: {len(results) * RECORDS_PER_CHILD} records, {duplicates} twice")


def _child_main(method: str, init: tuple[str, str, str], ids: tuple[str, str]) -> None:
    from apps.children import configure_child, tracked_steps

    if method != "fork":
        configure_child(*init)
    tracked_steps(ids)


def test_records_of_a_pre_fork_worker_that_ends_with_os_exit_are_not_lost(
    api_otel: OTel, fake_api: FakeHackAgentAPI, env_outbox_path: Path
) -> None:
    """A gunicorn-style worker: forked from the configured master, it works and leaves
    through os._exit, so no exit hook of ours ever runs in it."""
    from apps.children import RECORDS_PER_CHILD, tracked_steps

    run_id = str(uuid.uuid4())
    results = [str(uuid.uuid4()) for _ in range(3)]
    for result in results:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker
            code = 1
            try:
                tracked_steps((run_id, result))
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    _push_what_children_left(fake_api, api_outbox(env_outbox_path, fake_api))
    duplicates = _all_delivered_in_order(fake_api, results, RECORDS_PER_CHILD)
    print(f"\npre-fork: {len(results) * RECORDS_PER_CHILD} records, {duplicates} twice")


# -- span limits -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "limit",
    [
        ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "4"),
        ("OTEL_SPAN_EVENT_COUNT_LIMIT", "2"),
        ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "64"),
    ],
    ids=lambda pair: f"{pair[0]}={pair[1]}",
)
def test_span_limits_cut_the_spans_but_not_the_records(
    configure_api: ConfigureAPI,
    fake_api: FakeHackAgentAPI,
    run_id: str,
    result_id: str,
    monkeypatch: pytest.MonkeyPatch,
    limit: tuple[str, str],
) -> None:
    """Limits meant for span backends leave HackAgent's records whole, and say so."""
    from apps.attack_scenario import attack_calls, expected_attack_calls, run_attack_scenario

    monkeypatch.setenv(*limit)  # read by the SDK's SpanLimits when the provider is made
    otel = configure_api()
    run_seed_scenario(tracker_for(run_id, result_id))
    attack_run = str(uuid.uuid4())
    coordinator = run_attack_scenario(None, attack_run)
    assert hackagent_otel.force_flush(10_000)

    assert_scenario_delivered(fake_api, run_id, result_id)
    assert coordinator.goal_tracker is not None
    r0, r1 = (coordinator.goal_tracker.get_result_id(i) or "" for i in (0, 1))
    assert fake_api.wait_for(lambda: len(api_calls(fake_api, f"/run/{attack_run}")) >= 4, 10)
    assert attack_calls(fake_api, attack_run, [r0, r1]) == expected_attack_calls(attack_run, r0, r1)
    cut = otel.telemetry.stats()["mapping"]["cut_by_span_limits"]
    assert cut > 0  # the spans themselves were cut, as configured
