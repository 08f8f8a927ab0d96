"""``hackagent-otel outbox`` and ``hackagent-otel push``: inspect and deliver the outboxes.

Records that could not be delivered (API down, process exiting, no API configured)
wait in SQLite outbox files, one per API they were made for, beside the default outbox
(see :mod:`hackagent_otel._outbox_files`); records the API refused for good are kept
there too, for inspection. Both commands work on every outbox found there
(:func:`~hackagent_otel._outbox_files.find_outboxes`), or on the one ``--path`` names.

Where ``push`` delivers an outbox's records (:func:`destination_of`):

* an outbox made for an API goes to that API (its recorded target), whatever
  ``$HACKAGENT_BASE_URL`` says: an environment set up for one API never redirects
  records made for another;
* an outbox made with no API goes only to an API named for it: ``--base-url``, else
  ``$HACKAGENT_BASE_URL``; with neither it is left, and ``push`` exits 1;
* ``--base-url URL`` pushes only the outboxes made for URL and those made with no API.

The key (``--api-key``, else ``$HACKAGENT_API_KEY``) is sent to every API pushed to; it
is never written to an outbox or printed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hackagent_otel._config import API_KEY, BASE_URL, default_outbox_path
from hackagent_otel._delivery.client import HackAgentClient
from hackagent_otel._delivery.outbox import Outbox, OutboxError, OutboxRow
from hackagent_otel._delivery.push import PushReport, push
from hackagent_otel._delivery.retry import RetryPolicy
from hackagent_otel._outbox_files import api_target, find_outboxes
from hackagent_otel._settings_table import http_url, value_of

#: How long ``push`` keeps retrying an unreachable API without progress, by default.
DEFAULT_MAX_WAIT = 60.0

#: How records made with no API are delivered, wherever the commands mention them.
NO_API_HINT = "no API: push --base-url URL delivers these"


def show_outbox(path: Path | None, *, limit: int, console: Console) -> int:
    """Print each outbox's target, counts, pending and rejected rows; exit status 0, or
    1 when an outbox cannot be read."""
    files = _outboxes(path, console, none="nothing is waiting")
    if not files:
        return 0
    status = 0
    for file in files:
        try:
            with Outbox(file) as outbox:
                counts = outbox.counts()
                target = outbox.target
                aim = f"target {api_target(target)}" if target else NO_API_HINT
                console.print(
                    f"[bold]{escape(str(file))}[/]: {counts.pending} pending, "
                    f"{counts.rejected} rejected, {counts.delivered} delivered; {escape(aim)}",
                    soft_wrap=True,
                )
                if counts.pending:
                    console.print(_rows_table("pending", outbox.list_pending(limit)))
                if counts.rejected:
                    console.print(_rows_table("rejected", outbox.list_rejected(limit)))
        except OutboxError as exc:
            console.print(f"[red]{escape(f'{file}: {exc}')}[/]", soft_wrap=True)
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


@dataclass(frozen=True)
class Destination:
    """Where one outbox's records go in this push.

    ``base_url`` is ``None`` when they are not pushed, ``reason`` then says why and how
    to deliver them. ``counted``: whether records left there make the push exit 1 (an
    outbox that ``--base-url`` leaves out, made for another API, does not).
    """

    base_url: str | None
    reason: str = ""
    counted: bool = True


def destination_of(
    target: str | None, *, base_url_option: str | None, env_base_url: str | None
) -> Destination:
    """Where an outbox made for ``target`` (``None``: made with no API) is pushed.

    The recorded target wins over ``$HACKAGENT_BASE_URL`` (``env_base_url``), which only
    names an API for records made with none. ``--base-url`` (``base_url_option``) takes
    the outboxes made for it and those made with no API, and leaves the others alone.
    Both options come in :func:`~hackagent_otel._outbox_files.api_target` form, which
    ``target`` is compared in.
    """
    target = api_target(target) if target else None
    if base_url_option is not None:
        if target is None or target == base_url_option:
            return Destination(base_url_option)
        reason = f"made for {target}; push without --base-url delivers them there"
        return Destination(None, reason, counted=False)
    if target is not None:
        return Destination(target)
    if env_base_url is not None:
        return Destination(env_base_url)
    return Destination(None, NO_API_HINT)


def push_outbox(
    path: Path | None,
    base_url: str | None,
    api_key: str | None,
    *,
    console: Console,
    max_wait: float = DEFAULT_MAX_WAIT,
) -> int:
    """Deliver every outbox's pending rows to where :func:`destination_of` sends them.

    ``path``: that outbox file alone. ``base_url``/``api_key``: the ``--base-url`` and
    ``--api-key`` options (``None``: not given). ``max_wait``: seconds to keep retrying an
    unreachable API without progress. Prints a summary per outbox, then the total.
    Exit status 0 when nothing is left pending in the outboxes this push was due to
    deliver, 1 when something is, 2 on a usage error (a bad URL, no API key).
    """
    try:
        base_url_option = _api_url(base_url, "--base-url")
        # $HACKAGENT_BASE_URL on its own: it names an API only for records made with
        # none (see destination_of), so it is never merged with --base-url.
        (env_name,) = BASE_URL.env
        env_base_url = _api_url(os.environ.get(env_name), env_name)
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/]", soft_wrap=True)
        return 2
    files = _outboxes(path, console, none="nothing to push")
    if not files:
        return 0
    key = value_of(API_KEY, api_key)
    if key is None:
        console.print(
            "[red]no API key: pass --api-key or set HACKAGENT_API_KEY (without one the API "
            "would refuse every record for good)[/]",
            soft_wrap=True,
        )
        return 2
    total = _Total()
    for file in files:
        try:
            with Outbox(file) as outbox:
                destination = destination_of(
                    outbox.target, base_url_option=base_url_option, env_base_url=env_base_url
                )
                if path is not None:  # named on the command line: whatever is left counts
                    destination = dataclasses.replace(destination, counted=True)
                total.add(_push_one(outbox, destination, key, console=console, max_wait=max_wait))
        except OutboxError as exc:
            console.print(f"[red]{escape(f'{file}: {exc}')}[/]", soft_wrap=True)
            total.left_something = True
    console.print(f"total: {total.summary()}", soft_wrap=True)
    return 1 if total.left_something else 0


@dataclass
class _OutboxResult:
    """What one outbox came to: its report (``None``: not pushed), rows left, whether
    they count."""

    report: PushReport | None
    left: int
    counted: bool


def _push_one(
    outbox: Outbox, destination: Destination, key: str, *, console: Console, max_wait: float
) -> _OutboxResult:
    pending = outbox.pending_count()
    name = escape(str(outbox.path))
    if not pending:
        console.print(f"{name}: nothing pending", soft_wrap=True)
        return _OutboxResult(None, 0, destination.counted)
    if destination.base_url is None:
        console.print(
            f"{name}: {pending} pending, not pushed: {escape(destination.reason)}", soft_wrap=True
        )
        return _OutboxResult(None, pending, destination.counted)
    heading = f"{name} -> {escape(destination.base_url)}"
    sender = HackAgentClient(destination.base_url, key)
    try:
        with _progress_bar(console) as bar:
            task = bar.add_task(f"pushing {outbox.path.name}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = push(
                outbox, sender, progress=progress, policy=RetryPolicy(max_elapsed=max_wait)
            )
    finally:
        sender.close()
    console.print(f"{heading}: {escape(_summary(report))}", soft_wrap=True)
    return _OutboxResult(report, report.remaining, counted=True)


@dataclass
class _Total:
    """The sums over the outboxes one push was due to deliver, and whether it left
    anything in them."""

    outboxes: int = 0
    delivered: int = 0
    rejected: int = 0
    remaining: int = 0
    left_something: bool = False

    def add(self, result: _OutboxResult) -> None:
        if not result.counted:
            return
        self.outboxes += 1
        report = result.report
        if report is not None:
            self.delivered += report.delivered
            self.rejected += report.rejected
        stopped = report is not None and report.stopped is not None
        # A push stopped by outbox trouble reports -1 rows left: unknown, not none.
        self.remaining += max(result.left, 0)
        self.left_something = self.left_something or stopped or result.left != 0

    def summary(self) -> str:
        return json.dumps(
            {
                "outboxes": self.outboxes,
                "delivered": self.delivered,
                "rejected": self.rejected,
                "remaining": self.remaining,
            }
        )


def _outboxes(path: Path | None, console: Console, *, none: str) -> list[Path]:
    """The outbox files a command works on (``path`` alone, else the default one and
    every API's beside it); with none, says so, ending with ``none``."""
    default = default_outbox_path()
    files = find_outboxes(default, path)
    if not files:
        where = path or f"{default} or beside it"
        console.print(f"no outbox at {where}: {none}", soft_wrap=True)
    return files


def _api_url(url: str | None, named_by: str) -> str | None:
    """A URL given for the API (``None`` when unset or blank), in target form; raises
    ``ValueError`` when it is not http(s)."""
    if url is None or not url.strip():
        return None
    return api_target(http_url(url, named_by))


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
