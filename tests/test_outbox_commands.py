"""``outbox`` and ``push``: show what waits and why, deliver it in order."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from rich.console import Console

from apps.scenario import SCENARIO_RECORDS, expected_result_calls, expected_run_calls
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel._outbox_commands import outbox_files, push_outbox, show_outbox
from hackagent_otel.testing import FakeHackAgentAPI, Fault
from otel_fixtures import FilledOutbox, api_calls


def console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=300), out


def counts(path: Path) -> tuple[int, int]:
    with Outbox(path) as outbox:
        c = outbox.counts()
    return c.pending, c.rejected


def test_outbox_lists_the_pending_records_and_their_calls(filled_outbox: FilledOutbox) -> None:
    con, out = console()

    assert show_outbox(None, limit=20, console=con) == 0

    text = out.getvalue()
    assert f"{filled_outbox.path}: {SCENARIO_RECORDS} pending, 0 rejected, 0 delivered" in text
    assert f"POST /result/{filled_outbox.result_id}/trace" in text
    assert f"PATCH /run/{filled_outbox.run_id}" in text


def test_outbox_with_nothing_there_says_so(env_outbox_path: Path) -> None:
    con, out = console()
    assert show_outbox(None, limit=20, console=con) == 0
    assert "nothing is waiting" in out.getvalue()


def test_outbox_files_include_the_per_client_outboxes_beside_the_default(tmp_path: Path) -> None:
    default = tmp_path / "outbox.sqlite3"
    for name in ("outbox.sqlite3", "outbox-0123456789ab.sqlite3", "other.sqlite3"):
        Outbox(tmp_path / name).close()
    assert outbox_files(default) == [tmp_path / "outbox-0123456789ab.sqlite3", default]


def test_push_delivers_every_pending_record_in_order(
    filled_outbox: FilledOutbox, fake_api: FakeHackAgentAPI
) -> None:
    con, out = console()

    status = push_outbox(None, fake_api.base_url, fake_api.api_key, console=con)

    assert status == 0
    result_id, run_id = filled_outbox.result_id, filled_outbox.run_id
    assert api_calls(fake_api, f"/result/{result_id}") == expected_result_calls(result_id)
    assert api_calls(fake_api, f"/run/{run_id}") == expected_run_calls(run_id)
    assert counts(filled_outbox.path) == (0, 0)
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary == {"delivered": SCENARIO_RECORDS, "rejected": 0, "remaining": 0}


def test_push_with_the_api_down_exits_1_and_leaves_the_records_pending(
    filled_outbox: FilledOutbox, fake_api: FakeHackAgentAPI
) -> None:
    fake_api.stop()
    con, out = console()

    started = time.monotonic()
    status = push_outbox(None, fake_api.base_url, fake_api.api_key, console=con, max_wait=0.5)

    assert status == 1
    assert time.monotonic() - started < 3.0
    assert counts(filled_outbox.path) == (SCENARIO_RECORDS, 0)
    assert "stopped: API unavailable" in out.getvalue()


def test_rejected_records_are_kept_and_listed_as_rejected(
    filled_outbox: FilledOutbox, fake_api: FakeHackAgentAPI
) -> None:
    fake_api.inject(Fault.status(400), times=1)
    con, out = console()

    assert push_outbox(None, fake_api.base_url, fake_api.api_key, console=con) == 0
    assert counts(filled_outbox.path) == (0, 1)
    assert '"rejected": 1' in out.getvalue()

    con, out = console()
    assert show_outbox(filled_outbox.path, limit=20, console=con) == 0
    text = out.getvalue()
    assert "0 pending, 1 rejected" in text
    assert "HTTP 400" in text


def test_push_without_an_api_is_a_usage_error(filled_outbox: FilledOutbox) -> None:
    con, out = console()
    assert push_outbox(None, None, None, console=con) == 2
    assert "no HackAgent API" in out.getvalue()
    assert counts(filled_outbox.path) == (SCENARIO_RECORDS, 0)


def test_push_with_no_outbox_has_nothing_to_do(
    env_outbox_path: Path, fake_api: FakeHackAgentAPI
) -> None:
    con, out = console()
    assert push_outbox(None, fake_api.base_url, fake_api.api_key, console=con) == 0
    assert "nothing to push" in out.getvalue()
    assert fake_api.calls == []
