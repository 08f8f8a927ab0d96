"""``hackagent-otel outbox`` and ``hackagent-otel push``: inspect and deliver the outbox.

Records that could not be delivered (API down, process exiting, no API configured)
wait in SQLite outbox files; records the API refused for good are kept there too, for
inspection. These commands show both and deliver what is pending.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hackagent_otel._config import Settings
from hackagent_otel._delivery.client import HackAgentClient
from hackagent_otel._delivery.outbox import Outbox, OutboxError, OutboxRow
from hackagent_otel._delivery.push import PushReport, push
from hackagent_otel._delivery.retry import RetryPolicy

#: How long ``push`` keeps retrying an unreachable API without progress, by default.
DEFAULT_MAX_WAIT = 60.0


def outbox_files(default: Path) -> list[Path]:
    """The default outbox and the per-client ones beside it (``outbox-<digest>.sqlite3``)."""
    found = {default} if default.exists() else set()
    if default.parent.is_dir():
        found.update(default.parent.glob(f"{default.stem}-*{default.suffix}"))
    return sorted(found)


def show_outbox(path: Path | None, *, limit: int, console: Console) -> int:
    """Print counts, pending and rejected rows of each outbox; exit status 0, or 1 on error."""
    paths = [path] if path is not None else outbox_files(Settings.resolve().outbox_path)
    if not paths:
        console.print(f"no outbox at {Settings.resolve().outbox_path}: nothing is waiting")
        return 0
    status = 0
    for file in paths:
        try:
            with Outbox(file) as outbox:
                counts = outbox.counts()
                console.print(
                    f"[bold]{file}[/]: {counts.pending} pending, {counts.rejected} rejected, "
                    f"{counts.delivered} delivered"
                )
                if counts.pending:
                    console.print(_rows_table("pending", outbox.list_pending(limit)))
                if counts.rejected:
                    console.print(_rows_table("rejected", outbox.list_rejected(limit)))
        except OutboxError as exc:
            console.print(f"[red]{file}: {exc}[/]")
            status = 1
    return status


def _rows_table(title: str, rows: list[OutboxRow]) -> Table:
    table = Table(title=title, show_lines=False)
    for column in ("id", "call", "key", "attempts", "status", "last error"):
        table.add_column(column)
    for row in rows:
        call = row.call
        table.add_row(
            str(row.id),
            f"{call.method} {call.path}" if call.method else "<unreadable>",
            call.ordering_key[:8],
            str(row.attempts),
            "" if row.status is None else str(row.status),
            (row.last_error or "")[:80],
        )
    return table


def push_outbox(
    path: Path | None,
    base_url: str | None,
    api_key: str | None,
    *,
    console: Console,
    max_wait: float = DEFAULT_MAX_WAIT,
) -> int:
    """Deliver the outbox's pending rows; exit status 0 when all went, else 1.

    ``max_wait``: seconds to keep retrying an unreachable API without progress.
    """
    settings = Settings.resolve(hackagent_base_url=base_url, hackagent_api_key=api_key)
    if not settings.hackagent_base_url:
        console.print(
            "[red]no HackAgent API: pass --base-url/--api-key or set HACKAGENT_BASE_URL / "
            "HACKAGENT_API_KEY[/]"
        )
        return 2
    file = path or settings.outbox_path
    if not file.exists():
        console.print(f"no outbox at {file}: nothing to push")
        return 0
    sender = HackAgentClient(settings.hackagent_base_url, settings.hackagent_api_key)
    try:
        with Outbox(file) as outbox, _progress_bar(console) as bar:
            task = bar.add_task("pushing", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = push(
                outbox, sender, progress=progress, policy=RetryPolicy(max_elapsed=max_wait)
            )
    except OutboxError as exc:
        console.print(f"[red]{file}: {exc}[/]")
        return 1
    finally:
        sender.close()
    console.print(_summary(report))
    return 0 if report.complete else 1


def _progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _summary(report: PushReport) -> str:
    text = json.dumps(
        {
            "delivered": report.delivered,
            "rejected": report.rejected,
            "remaining": report.remaining,
        }
    )
    return text if report.stopped is None else f"{text}  stopped: {report.stopped}"
