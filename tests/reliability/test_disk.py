"""The outbox on a read-only directory, a full disk, or a corrupt file.

In every case the pipeline runs to the end at full speed, one clear ERROR names the
outbox and the cause, delivery goes on from memory while the API answers, and what
could be neither delivered nor stored is dropped, counted and logged: sent + stored +
dropped = produced.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.scenario import SCENARIO_RECORDS, run_seed_scenario

from .conftest import Harness, HarnessFactory


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody may write to, not even root (``chattr +i``)."""
    path = tmp_path / "read-only"
    path.mkdir()
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: the outbox fills it."""
    path = tmp_path / "tiny-disk"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.fixture
def corrupt_file(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt" / "outbox.sqlite3"
    path.parent.mkdir()
    path.write_bytes(b"this is not an SQLite database\n" * 200)
    return path


def outbox_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "hackagent_otel.delivery" and r.levelno >= logging.ERROR
    ]


def stored_rows(path: Path) -> int:
    """Pending rows in an outbox file, read without writing (0 if there is none)."""
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM calls WHERE state IN ('pending', 'inflight')"
                ).fetchone()[0]
            )
    except sqlite3.DatabaseError:
        return 0


def run_pipeline(harness: Harness, runs: int = 1) -> float:
    started = time.monotonic()
    for _ in range(runs):
        run_seed_scenario(harness.tracker(str(uuid.uuid4())))
    return time.monotonic() - started


@pytest.mark.parametrize("where", ["read-only-dir", "corrupt-file"])
def test_an_unusable_outbox_is_one_clear_error_and_delivery_goes_on_from_memory(
    make_harness: HarnessFactory,
    all_logs: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
    where: str,
) -> None:
    if where == "read-only-dir":
        path = request.getfixturevalue("read_only_dir") / "outbox.sqlite3"
        # The file is made (mode 0600) before SQLite opens it: the OS's own words.
        causes: tuple[str, ...] = ("Operation not permitted", "Permission denied")
    else:
        path = request.getfixturevalue("corrupt_file")
        causes = ("file is not a database",)
    harness = make_harness(path, open_outbox=False)

    took = run_pipeline(harness, runs=5)

    assert took < 2.0
    final = harness.wait_settled()
    assert final.produced == 5 * SCENARIO_RECORDS
    assert final.sent == final.produced, final
    assert final.dropped == 0
    (error,) = outbox_errors(all_logs)
    assert "outbox unusable" in error
    assert str(path) in error
    assert any(cause in error for cause in causes), error


@pytest.mark.parametrize("where", ["read-only-dir", "corrupt-file"])
def test_an_unusable_outbox_with_the_api_down_drops_and_counts_what_cannot_be_kept(
    make_harness: HarnessFactory,
    all_logs: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
    where: str,
) -> None:
    fixture = "read_only_dir" if where == "read-only-dir" else "corrupt_file"
    found = request.getfixturevalue(fixture)
    path = found / "outbox.sqlite3" if found.is_dir() else found
    harness = make_harness(path, open_outbox=False)
    harness.api.stop()

    took = run_pipeline(harness)

    assert took < 1.0
    assert not harness.provider.force_flush(1_000)  # nothing delivered, nowhere to keep it
    harness.processor.shutdown(1_000)
    final = harness.accounting()
    assert final.produced == SCENARIO_RECORDS
    assert final.dropped == SCENARIO_RECORDS, final
    assert final.sent == 0
    errors = outbox_errors(all_logs)
    assert any("outbox unusable" in e and str(path) in e for e in errors), errors
    warnings = [r.getMessage() for r in all_logs.records if "dropped" in r.getMessage()]
    assert any(f"({SCENARIO_RECORDS} dropped in total)" in w for w in warnings), warnings


def test_a_full_disk_keeps_what_fit_delivers_from_memory_and_counts_every_drop(
    make_harness: HarnessFactory, all_logs: pytest.LogCaptureFixture, tiny_disk: Path
) -> None:
    path = tiny_disk / "outbox.sqlite3"
    harness = make_harness(path, open_outbox=False, queue_size=256)
    harness.api.stop()
    runs = 300  # 2,400 records, a few MB: more than the disk holds

    took = run_pipeline(harness, runs=runs)
    harness.provider.force_flush(2_000)

    errors = outbox_errors(all_logs)
    assert any("outbox unusable" in e and "full" in e for e in errors), errors
    harness.api.start()
    settled = harness.api.wait_for(lambda: harness.accounting().queued == 0, timeout=20)
    assert settled, harness.accounting()
    harness.processor.shutdown(2_000)
    final = harness.accounting()
    stored = stored_rows(path)
    figures = {
        "produced": final.produced,
        "sent": final.sent,
        "stored": stored,
        "dropped": final.dropped,
        "seconds": round(took, 2),
    }
    print("\nfull disk figures:", figures)
    assert final.produced == runs * SCENARIO_RECORDS
    assert stored > 0
    assert final.dropped > 0
    assert final.sent + stored + final.dropped == final.produced, figures
    assert took < 10.0
