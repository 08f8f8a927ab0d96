"""hackagent 0.5.0's real ``BaseAttack``, on the original tracking and on ours.

The same small attack (``tier_attack.py``: per goal a few attempts at a fake target, a
judge, the coordinator's verdicts) runs twice in the tier's virtualenv, each time
against a fresh FakeHackAgentAPI started here: once as hackagent ships, once with
hackagent's tracking names swapped for ours. The calls the API received are compared
per run and per result (each Result's calls in order, the API's ids mapped by goal
index), ``content.otel`` (our one addition) left out. Every difference fails the test
unless an :class:`~calls.Allowance` below states it exactly.

Not compared, by design: the order of calls *across* results and the run. The original
makes every call in turn on the attack's thread; ours delivers each Result's records in
order on the Result's own ordering key and the run's status updates on the run's, in
parallel, so goals' creations may arrive in any order and the run's COMPLETED may arrive
before the last records of its results (see ``test_ours_orders_per_result_not_across``).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel._outbox_files import find_outboxes
from hackagent_otel.testing import FakeHackAgentAPI

from .attack_values import JUDGE_KEY, MAX_NEW_TOKENS, SESSION_TOKEN, TARGET_API_KEY
from .calls import REDACTED, Allowance, AttackCalls, attack_calls, differences, report, unallowed
from .conftest import API_KEY, SCRIPT, SCRIPT_TIMEOUT, AttackRun, free_port, run_attack, script_env

pytestmark = [pytest.mark.hackagent_tier, pytest.mark.timeout(1200)]

GOALS = 3
ATTEMPTS = 3
FLAGS = ("--goals", str(GOALS), "--attempts", str(ATTEMPTS))

#: Secrets the original sent as they were and ours redacts: each allowed exactly where
#: it occurs (the JSON path in the call's body), with the value the original sent.
SECRETS_OURS_REDACTS = (
    Allowance(
        "TrackingCoordinator's initial_metadata: the original sent it unsanitized as the "
        "Result's agent_specific_data, at its creation and in its verdict",
        ("agent_specific_data", "judge_api_key"),
        JUDGE_KEY,
        REDACTED,
    ),
    Allowance(
        "add_interaction_trace(metadata=...): the original sanitized the request only",
        ("content", "metadata", "session_token"),
        SESSION_TOKEN,
        REDACTED,
    ),
    Allowance(
        "add_custom_trace(content): the original sent it unsanitized",
        ("content", "session_token"),
        SESSION_TOKEN,
        REDACTED,
    ),
)
#: Not a secret: the original redacted every key with "token" in it, so a step's
#: ``max_new_tokens`` (a length) reached the API as ***REDACTED***; ours keeps token
#: counts readable on purpose (hackagent_otel._sanitize: "max_tokens stays readable":
#: a model parameter every LLM config has, and the run's record is useless without it).
TOKEN_COUNTS_OURS_SENDS = (
    Allowance(
        "a step's config_snapshot: max_new_tokens, which the original's substring rule "
        "('token' in the key) redacted",
        ("content", "config_snapshot", "max_new_tokens"),
        REDACTED,
        MAX_NEW_TOKENS,
    ),
    Allowance(
        "an interaction's request: max_new_tokens, likewise",
        ("content", "request", "max_new_tokens"),
        REDACTED,
        MAX_NEW_TOKENS,
    ),
)


def _instrumentor_importable() -> bool:
    return importlib.util.find_spec("hackagent_otel.instrumentation") is not None


def _calls_of(
    tier_python: Path, tracking: str, run_id: str, folder: Path, *flags: str
) -> tuple[AttackCalls, AttackRun]:
    """One run of the attack against a fresh API: the calls it made, and its report."""
    folder.mkdir(parents=True, exist_ok=True)
    with FakeHackAgentAPI(api_key=API_KEY, unique_sequences=True) as api:
        run = run_attack(
            tier_python, tracking, api.base_url, run_id, folder / "outbox.sqlite3", *flags
        )
        return attack_calls(api, run_id), run


@pytest.fixture(scope="module")
def healthy(
    tier_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[AttackCalls, AttackRun]]:
    """The attack on each tracking, one run id, a healthy API."""
    run_id = str(uuid.uuid4())
    folder = tmp_path_factory.mktemp("healthy")
    return {
        tracking: _calls_of(tier_python, tracking, run_id, folder / tracking, *FLAGS)
        for tracking in ("original", "ours")
    }


def test_the_attack_runs_on_hackagents_tracking_then_on_ours(
    healthy: dict[str, tuple[AttackCalls, AttackRun]],
) -> None:
    original, ours = healthy["original"][1].report, healthy["ours"][1].report
    assert original["coordinator"] == "hackagent.router.tracking.coordinator.TrackingCoordinator"
    assert ours["coordinator"] == "hackagent_otel._coordinator.TrackingCoordinator"
    assert ours["base_uses"] == "hackagent_otel._coordinator"  # BaseAttack's own global
    assert ours["swapped"] == ("instrumentor" if _instrumentor_importable() else "by hand")
    assert ours["flushed"] is True
    assert original["error"] is ours["error"] is None


def test_ours_sends_the_originals_calls_per_run_and_per_result_but_for_stated_redactions(
    healthy: dict[str, tuple[AttackCalls, AttackRun]],
) -> None:
    original, ours = healthy["original"][0], healthy["ours"][0]
    # Per goal: creation, setup, attempts, judge, evaluation, verdict; the two steps'
    # start and summary on goal 0's Result; the run's RUNNING and COMPLETED.
    assert original.total() == GOALS * (ATTEMPTS + 5) + 2 * 2 + 2
    allowances = SECRETS_OURS_REDACTS + TOKEN_COUNTS_OURS_SENDS
    left, used = unallowed(differences(original, ours), allowances)
    assert not left, report(left)
    assert used == set(allowances), "an allowance no longer needed: drop it"


def test_ours_sends_none_of_the_secrets_the_attack_handed_its_tracking(
    healthy: dict[str, tuple[AttackCalls, AttackRun]],
) -> None:
    sent = json.dumps([healthy["ours"][0].__dict__])
    for secret in (TARGET_API_KEY, SESSION_TOKEN, JUDGE_KEY):
        assert secret not in sent
    assert JUDGE_KEY in json.dumps([healthy["original"][0].__dict__])  # the original did


def test_the_attack_reads_the_apis_ids_and_the_same_summary_from_ours(
    healthy: dict[str, tuple[AttackCalls, AttackRun]],
) -> None:
    for calls, run in healthy.values():
        assert run.report["result_ids"] == [calls.result_ids[i] for i in range(GOALS)]
    # Both count all 3 goals successful where 2 were: the original's initialize_goals
    # hands every goal's Context one and the same initial_metadata dict, so the last
    # verdict's "success" is every goal's; ours keeps that as it is.
    assert healthy["ours"][1].report["summary"] == healthy["original"][1].report["summary"]


def test_ours_orders_per_result_not_across(
    healthy: dict[str, tuple[AttackCalls, AttackRun]],
) -> None:
    """What the comparison leaves out, held to what each side promises: the original
    creates the goals' Results in goal order, and its run's statuses frame them; ours
    keeps each Result's and the run's own order (compared above), and every creation
    arrives once."""
    original, ours = healthy["original"][0], healthy["ours"][0]
    assert original.creation_order == list(range(GOALS))
    assert sorted(ours.creation_order) == list(range(GOALS))
    assert [c[3] for c in ours.run] == [{"status": "RUNNING"}, {"status": "COMPLETED"}]


def test_a_failing_attack_sends_the_originals_calls_on_ours(
    tier_python: Path, tmp_path: Path
) -> None:
    """The evaluation step raises: the step's error on goal 0's Result, its summary as
    failed, every goal failed by finalize_on_error, the run FAILED."""
    run_id = str(uuid.uuid4())
    flags = ("--goals", "2", "--attempts", "2", "--fail-evaluation")
    original, original_run = _calls_of(tier_python, "original", run_id, tmp_path / "o", *flags)
    ours, ours_run = _calls_of(tier_python, "ours", run_id, tmp_path / "u", *flags)
    assert original_run.report["error"] == ours_run.report["error"] == "judge unavailable"
    assert [c[3]["status"] for c in original.run] == ["RUNNING", "FAILED"]
    patches = [c[3]["evaluation_status"] for c in original.results[0] if c[0] == "PATCH"]
    assert patches == ["ERROR_TEST_FRAMEWORK", "FAILED_JAILBREAK"]
    allowances = SECRETS_OURS_REDACTS[:2] + TOKEN_COUNTS_OURS_SENDS
    left, _ = unallowed(differences(original, ours), allowances)
    assert not left, report(left)


#: How long the API stays down, and when the attack's process exits (after its
#: ``force_flush``, with ``shutdown()``), as the outage tests vary it.
BACK_AT_EXIT = "up again when the attack is over"
DRAINED_BEFORE_EXIT = "down until every record is in the outbox; drained before exit"
EXIT_WHILE_DRAINING = "down until every record is in the outbox; exit while draining"


@pytest.mark.parametrize(
    "down",
    [
        BACK_AT_EXIT,
        DRAINED_BEFORE_EXIT,
        EXIT_WHILE_DRAINING,
    ],
)
def test_an_api_down_for_the_whole_attack_gets_every_record_once_in_order_with_its_ids(
    tier_python: Path,
    healthy: dict[str, tuple[AttackCalls, AttackRun]],
    tmp_path: Path,
    down: str,
) -> None:
    """Ours against a port where no API listens until the attack is over (and, but in
    the first case, until delivery gave up retrying and put every record in the
    outbox); then the API comes up, and what the process delivers on its way out and
    ``hackagent-otel push`` delivers after it is, call for call, what the original sent
    a healthy API."""
    original, _ = healthy["original"]
    run_id = _run_id_of(original)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    outbox = tmp_path / "outbox.sqlite3"
    # Reads of the goals' ids wait at most this long while the API is down.
    env = script_env(outbox, HACKAGENT_RESULT_ID_TIMEOUT="1")
    attack = subprocess.Popen(
        [str(tier_python), str(SCRIPT), "ours", base_url, API_KEY, run_id, *FLAGS, "--hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert attack.stdin is not None
    assert attack.stdout is not None
    api = FakeHackAgentAPI(api_key=API_KEY, port=port, unique_sequences=True)
    try:
        try:
            first = attack.stdout.readline()
            assert json.loads(first or "{}").get("phase") == "attack done", _failed(attack)
            if down != BACK_AT_EXIT:
                assert _wait_for_outbox(outbox, original.total()), _failed(attack)
            if down == EXIT_WHILE_DRAINING:
                api.set_latency(100)  # the drain's batch takes a second or so
            api.start()  # the API is up from now on
            if down == DRAINED_BEFORE_EXIT:
                delivered = _wait_for_outbox(outbox, original.total(), "delivered", 90)
                assert delivered, _failed(attack)
            elif down == EXIT_WHILE_DRAINING:
                assert api.wait_for(1, timeout=90), _failed(attack)
            attack.stdin.write("go\n")
            attack.stdin.flush()
            out, err = attack.communicate(timeout=SCRIPT_TIMEOUT)
        finally:
            if attack.poll() is None:
                attack.kill()
                attack.wait()
        assert attack.returncode == 0, err[-4000:]
        api.set_latency(0)
        pushed = subprocess.run(
            [str(tier_python), "-m", "hackagent_otel", "push", "--base-url", base_url],
            check=False,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT,
            env={**env, "HACKAGENT_API_KEY": API_KEY},
            cwd=tmp_path,
        )
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        ours = attack_calls(api, run_id)
    finally:
        api.stop()
    assert json.loads(out.strip().splitlines()[-1])["result_ids"] == [
        ours.result_ids[i] for i in range(GOALS)
    ]
    # While the API was down, the evaluation step's reads of the goals' ids waited
    # their bound and got None (as the original's did when a creation failed), and the
    # attack recorded what it read: the one difference the outage itself makes.
    read_during_outage = tuple(
        Allowance(
            "the goal ids the attack read while the API was down",
            ("content", "step_metadata", "result_ids", index),
            f"<result {index}>",
            None,
        )
        for index in range(GOALS)
    )
    allowances = SECRETS_OURS_REDACTS + TOKEN_COUNTS_OURS_SENDS + read_during_outage
    left, used = unallowed(differences(original, ours), allowances)
    assert not left, report(left)
    assert set(read_during_outage) <= used


def _wait_for_outbox(
    default: Path, records: int, state: str = "pending", timeout: float = 60.0
) -> bool:
    """Wait until the outboxes beside ``default`` count ``records`` rows ``pending`` (in
    flight included) or ``delivered``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = 0
        for file in find_outboxes(default):
            with Outbox(file) as box:
                found += getattr(box.counts(), state)
        if found >= records:
            return True
        time.sleep(0.1)
    return False


def _run_id_of(calls: AttackCalls) -> str:
    """The run id the original's calls went to."""
    return str(calls.creations[0][0][3]["run"])


def _failed(process: subprocess.Popen[str]) -> str:
    process.kill()
    _, err = process.communicate()
    return f"the attack did not finish its first phase:\n{err[-4000:]}"
