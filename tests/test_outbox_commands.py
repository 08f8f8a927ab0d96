"""``outbox`` and ``push``: every outbox found, shown with its API, delivered to it in order."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console

import hackagent_otel
from apps.scenario import (
    SCENARIO_RECORDS,
    expected_result_calls,
    expected_run_calls,
    run_seed_scenario,
)
from hackagent_otel import StepTracker, TrackingContext
from hackagent_otel._cli import main
from hackagent_otel._config import default_outbox_path
from hackagent_otel._delivery.outbox import Outbox
from hackagent_otel._outbox_commands import NO_API_HINT, push_outbox, show_outbox
from hackagent_otel._outbox_files import api_target, find_outboxes, outbox_path_for_target
from hackagent_otel._records import TRACE, Record
from hackagent_otel.testing import FakeHackAgentAPI, Fault
from otel_fixtures import ConfigureOTel, FilledOutbox, api_calls


def console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=300), out


def counts(path: Path) -> tuple[int, int]:
    with Outbox(path) as outbox:
        c = outbox.counts()
    return c.pending, c.rejected


def total_of(text: str) -> dict[str, int]:
    """The ``total:`` line push prints last."""
    last = text.strip().splitlines()[-1]
    assert last.startswith("total: "), last
    found: dict[str, int] = json.loads(last.removeprefix("total: "))
    return found


def spool(path: Path, target: str | None, result_id: str, n: int) -> None:
    """``n`` trace records for ``result_id`` waiting in the outbox at ``path``, as a
    service made for ``target`` (``None``: no API) leaves them."""
    records = [
        Record(
            kind=TRACE,
            method="POST",
            path=f"/result/{result_id}/trace",
            body={"sequence": i, "step_type": "OTHER", "content": {"step_name": f"step {i}"}},
            ordering_key=result_id,
        )
        for i in range(1, n + 1)
    ]
    with Outbox(path, target=target) as outbox:
        outbox.put_many(records)


def sequences(api: FakeHackAgentAPI, result_id: str) -> list[int]:
    return [int(t["sequence"]) for t in api.traces_for(result_id)]


@pytest.fixture
def api_key_env(fake_api: FakeHackAgentAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """``HACKAGENT_API_KEY`` set to the fake APIs' key, and no ``HACKAGENT_BASE_URL``."""
    monkeypatch.setenv("HACKAGENT_API_KEY", fake_api.api_key)


@pytest.fixture
def other_api(fake_api: FakeHackAgentAPI) -> Iterator[FakeHackAgentAPI]:
    """A second fake API with the same key as ``fake_api``."""
    with FakeHackAgentAPI(api_key=fake_api.api_key) as api:
        yield api


# -- outbox ------------------------------------------------------------------------------


def test_outbox_lists_the_pending_records_and_their_calls(filled_outbox: FilledOutbox) -> None:
    con, out = console()

    assert show_outbox(None, limit=20, console=con) == 0

    text = out.getvalue()
    line = f"{filled_outbox.path}: {SCENARIO_RECORDS} pending, 0 rejected, 0 delivered"
    assert f"{line}; {NO_API_HINT}" in text
    assert f"POST /result/{filled_outbox.result_id}/trace" in text
    assert f"PATCH /run/{filled_outbox.run_id}" in text


def test_outbox_with_nothing_there_says_so(env_outbox_path: Path) -> None:
    con, out = console()
    assert show_outbox(None, limit=20, console=con) == 0
    assert "nothing is waiting" in out.getvalue()


def test_outbox_shows_each_outbox_with_the_api_its_records_are_for(
    env_outbox_path: Path, fake_api: FakeHackAgentAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    spool(env_outbox_path, None, str(uuid.uuid4()), 2)
    for_api = outbox_path_for_target(env_outbox_path, fake_api.base_url)
    spool(for_api, fake_api.base_url, str(uuid.uuid4()), 3)

    assert main(["outbox"]) == 0

    text = capsys.readouterr().out
    assert f"{env_outbox_path}: 2 pending, 0 rejected, 0 delivered; {NO_API_HINT}" in text
    assert f"{for_api}: 3 pending, 0 rejected, 0 delivered; target {fake_api.base_url}" in text


# -- finding the outboxes ------------------------------------------------------------------


@pytest.mark.parametrize("default_name", ["outbox.sqlite3", "x"])
def test_every_outbox_beside_the_default_is_found_and_nothing_else(
    tmp_path: Path, default_name: str
) -> None:
    default = tmp_path / default_name
    for_api = outbox_path_for_target(default, "http://127.0.0.1:1")
    for outbox in (default, for_api):
        with Outbox(outbox) as box:
            assert box.drain_lock.try_acquire()  # its .lock file exists too
        Path(f"{outbox}-wal").touch()
        Path(f"{outbox}-shm").touch()
    stem, suffix = default.stem, default.suffix
    for stray in (f"{stem}-notadigest{suffix}", f"{stem}-0123456789abc{suffix}", "other.db"):
        (tmp_path / stray).touch()

    assert find_outboxes(default) == [default, for_api]
    assert for_api.name.startswith(f"{stem}-")
    assert for_api.suffix == suffix
    assert find_outboxes(default, tmp_path / "other.db") == [tmp_path / "other.db"]
    assert find_outboxes(default, tmp_path / "missing.db") == []
    assert find_outboxes(tmp_path / "nowhere" / "outbox.sqlite3") == []


def test_an_apis_outbox_is_named_after_its_base_url_without_trailing_slash_or_user_info(
    tmp_path: Path,
) -> None:
    default = tmp_path / "outbox.sqlite3"
    assert api_target("http://127.0.0.1:8000/api/") == "http://127.0.0.1:8000/api"
    assert api_target("https://user:secret@host.example/") == "https://host.example"
    same = {
        outbox_path_for_target(default, url)
        for url in ("http://host:1", "http://host:1/", "http://me:pw@host:1")
    }
    assert len(same) == 1
    assert outbox_path_for_target(default, "http://host:2") not in same


# -- push: where each outbox goes ------------------------------------------------------------


@pytest.fixture(params=["HACKAGENT_OUTBOX_PATH without suffix", "default under XDG_STATE_HOME"])
def outbox_env(
    request: pytest.FixtureRequest, clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The default outbox a run and a later push both find from the environment."""
    if request.param == "default under XDG_STATE_HOME":
        monkeypatch.delenv("HACKAGENT_OUTBOX_PATH")
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    else:
        monkeypatch.setenv("HACKAGENT_OUTBOX_PATH", str(tmp_path / "spool" / "x"))
    return default_outbox_path()


@pytest.mark.parametrize("client_kind", ["httpx.Client on the context", "API from env vars"])
def test_push_with_the_api_in_the_env_delivers_every_record_of_a_run_made_while_it_was_down(
    configure_otel: ConfigureOTel,
    outbox_env: Path,
    fake_api: FakeHackAgentAPI,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    client_kind: str,
) -> None:
    # An earlier run with no API configured left records in the default outbox.
    configure_otel()
    old_run, old_result = str(uuid.uuid4()), str(uuid.uuid4())
    run_seed_scenario(StepTracker(TrackingContext(run_id=old_run, parent_result_id=old_result)))
    hackagent_otel.shutdown()
    # This run's API is down.
    fake_api.stop()
    run_id, result_id = str(uuid.uuid4()), str(uuid.uuid4())
    if client_kind == "API from env vars":
        monkeypatch.setenv("HACKAGENT_BASE_URL", fake_api.base_url)
        monkeypatch.setenv("HACKAGENT_API_KEY", fake_api.api_key)
        configure_otel()
        run_seed_scenario(StepTracker(TrackingContext(run_id=run_id, parent_result_id=result_id)))
        hackagent_otel.shutdown()
    else:
        configure_otel()
        headers = {"Authorization": f"Bearer {fake_api.api_key}"}
        with httpx.Client(base_url=fake_api.base_url, headers=headers) as client:
            run_seed_scenario(StepTracker(TrackingContext(client, run_id, result_id)))
            hackagent_otel.shutdown()
    assert fake_api.calls == []
    assert counts(outbox_env) == (SCENARIO_RECORDS, 0)  # only the records made with no API
    fake_api.start()
    monkeypatch.setenv("HACKAGENT_BASE_URL", fake_api.base_url)
    monkeypatch.setenv("HACKAGENT_API_KEY", fake_api.api_key)

    assert main(["push"]) == 0

    assert api_calls(fake_api, f"/result/{result_id}") == expected_result_calls(result_id)
    assert api_calls(fake_api, f"/run/{run_id}") == expected_run_calls(run_id)
    # The records made with no API went to the API the environment names for them.
    assert api_calls(fake_api, f"/result/{old_result}") == expected_result_calls(old_result)
    assert total_of(capsys.readouterr().out) == {
        "outboxes": 2,
        "delivered": 2 * SCENARIO_RECORDS,
        "rejected": 0,
        "remaining": 0,
    }
    # Exactly once: a second push finds nothing to send.
    assert main(["push"]) == 0
    assert len(fake_api.calls) == 2 * SCENARIO_RECORDS
    assert fake_api.duplicate_traces() == []


def test_an_outbox_made_for_an_api_goes_there_whatever_hackagent_base_url_says(
    env_outbox_path: Path,
    fake_api: FakeHackAgentAPI,
    other_api: FakeHackAgentAPI,
    api_key_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result_id = str(uuid.uuid4())
    spool(
        outbox_path_for_target(env_outbox_path, other_api.base_url),
        other_api.base_url,
        result_id,
        3,
    )
    monkeypatch.setenv("HACKAGENT_BASE_URL", fake_api.base_url)

    assert main(["push"]) == 0

    assert sequences(other_api, result_id) == [1, 2, 3]
    assert fake_api.calls == []


def test_base_url_pushes_the_outboxes_made_for_it_and_those_made_with_no_api(
    env_outbox_path: Path,
    fake_api: FakeHackAgentAPI,
    other_api: FakeHackAgentAPI,
    api_key_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    no_api, for_it, for_other = (str(uuid.uuid4()) for _ in range(3))
    spool(env_outbox_path, None, no_api, 2)
    spool(outbox_path_for_target(env_outbox_path, fake_api.base_url), fake_api.base_url, for_it, 3)
    other_outbox = outbox_path_for_target(env_outbox_path, other_api.base_url)
    spool(other_outbox, other_api.base_url, for_other, 4)

    assert main(["push", "--base-url", fake_api.base_url + "/"]) == 0

    assert sequences(fake_api, no_api) == [1, 2]
    assert sequences(fake_api, for_it) == [1, 2, 3]
    assert other_api.calls == []
    assert counts(other_outbox) == (4, 0)
    text = capsys.readouterr().out
    assert f"{other_outbox}: 4 pending, not pushed: made for {other_api.base_url}" in text
    assert total_of(text) == {"outboxes": 2, "delivered": 5, "rejected": 0, "remaining": 0}


def test_records_made_with_no_api_are_pushed_only_to_an_api_named_for_them(
    filled_outbox: FilledOutbox,
    fake_api: FakeHackAgentAPI,
    api_key_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["push"]) == 1

    text = capsys.readouterr().out
    assert f"{filled_outbox.path}: {SCENARIO_RECORDS} pending, not pushed: {NO_API_HINT}" in text
    assert total_of(text)["remaining"] == SCENARIO_RECORDS
    assert fake_api.calls == []
    assert counts(filled_outbox.path) == (SCENARIO_RECORDS, 0)

    assert main(["push", "--base-url", fake_api.base_url]) == 0

    result_id = filled_outbox.result_id
    assert api_calls(fake_api, f"/result/{result_id}") == expected_result_calls(result_id)
    assert counts(filled_outbox.path) == (0, 0)


def test_path_pushes_one_outbox_to_its_target_and_never_to_another_api(
    env_outbox_path: Path,
    fake_api: FakeHackAgentAPI,
    other_api: FakeHackAgentAPI,
    api_key_env: None,
) -> None:
    result_id = str(uuid.uuid4())
    for_other = outbox_path_for_target(env_outbox_path, other_api.base_url)
    spool(for_other, other_api.base_url, result_id, 2)
    spool(env_outbox_path, None, str(uuid.uuid4()), 1)

    assert main(["push", "--path", str(for_other), "--base-url", fake_api.base_url]) == 1
    assert fake_api.calls == []
    assert counts(for_other) == (2, 0)

    assert main(["push", "--path", str(for_other)]) == 0
    assert sequences(other_api, result_id) == [1, 2]
    assert counts(env_outbox_path) == (1, 0)  # the other outbox was left alone


def test_hackagent_outbox_path_set_for_a_run_and_its_push_finds_every_outbox(
    tmp_path: Path,
    clean_env: None,
    fake_api: FakeHackAgentAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HACKAGENT_OUTBOX_PATH", str(tmp_path / "x"))
    default = tmp_path / "x"
    result_id = str(uuid.uuid4())
    spool(outbox_path_for_target(default, fake_api.base_url), fake_api.base_url, result_id, 2)
    monkeypatch.setenv("HACKAGENT_API_KEY", fake_api.api_key)

    assert main(["push"]) == 0

    assert sequences(fake_api, result_id) == [1, 2]


def test_no_key_reaches_an_outbox_file_or_the_commands_output(
    configure_otel: ConfigureOTel,
    env_outbox_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = f"sk-canary-{uuid.uuid4().hex}"
    with FakeHackAgentAPI(api_key=key) as api:
        api.stop()
        monkeypatch.setenv("HACKAGENT_BASE_URL", api.base_url)
        monkeypatch.setenv("HACKAGENT_API_KEY", key)
        configure_otel()
        env_result = str(uuid.uuid4())
        run_seed_scenario(
            StepTracker(TrackingContext(run_id=str(uuid.uuid4()), parent_result_id=env_result))
        )
        client_result = str(uuid.uuid4())
        client_url = api.base_url + "/"  # the same API: another spelling, one outbox
        with httpx.Client(base_url=client_url, headers={"Authorization": f"Bearer {key}"}) as c:
            run_seed_scenario(StepTracker(TrackingContext(c, str(uuid.uuid4()), client_result)))
            hackagent_otel.shutdown()
        api.start()

        assert main(["outbox"]) == 0
        assert main(["push"]) == 0
        assert main(["push", "--api-key", key, "--base-url", api.base_url]) == 0

        assert len(api_calls(api, f"/result/{env_result}")) == 6
        assert len(api_calls(api, f"/result/{client_result}")) == 6
    output = capsys.readouterr()
    assert api.base_url in output.out
    assert key not in output.out + output.err
    files = [file for file in env_outbox_path.parent.iterdir() if file.is_file()]
    assert outbox_path_for_target(env_outbox_path, api.base_url) in files
    for file in files:
        assert key.encode() not in file.read_bytes(), file


# -- push: delivery and its outcome ---------------------------------------------------------


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
    text = out.getvalue()
    per_outbox = {"delivered": SCENARIO_RECORDS, "rejected": 0, "remaining": 0}
    assert f"{filled_outbox.path} -> {fake_api.base_url}: {json.dumps(per_outbox)}" in text
    assert total_of(text) == {"outboxes": 1, **per_outbox}


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
    assert total_of(out.getvalue())["remaining"] == SCENARIO_RECORDS


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


def test_push_without_an_api_key_is_a_usage_error(
    filled_outbox: FilledOutbox, fake_api: FakeHackAgentAPI
) -> None:
    con, out = console()
    assert push_outbox(None, fake_api.base_url, None, console=con) == 2
    assert "no API key" in out.getvalue()
    assert counts(filled_outbox.path) == (SCENARIO_RECORDS, 0)
    assert fake_api.calls == []


def test_push_with_a_base_url_that_is_not_http_is_a_usage_error(
    filled_outbox: FilledOutbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    con, out = console()
    assert push_outbox(None, "ftp://host", "k", console=con) == 2
    assert "--base-url 'ftp://host' must start with http://" in out.getvalue()
    monkeypatch.setenv("HACKAGENT_BASE_URL", "host:1")
    con, out = console()
    assert push_outbox(None, None, "k", console=con) == 2
    assert "HACKAGENT_BASE_URL 'host:1'" in out.getvalue()


def test_push_with_no_outbox_has_nothing_to_do(
    env_outbox_path: Path, fake_api: FakeHackAgentAPI
) -> None:
    con, out = console()
    assert push_outbox(None, fake_api.base_url, fake_api.api_key, console=con) == 0
    assert "nothing to push" in out.getvalue()
    assert fake_api.calls == []
