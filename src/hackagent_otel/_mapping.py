"""Span views -> the HackAgent calls the original tracker made. Pure: no I/O, no clock.

For a step on a result (``hackagent.kind = step``):

* start: ``POST /result/{result}/trace`` with ``sequence`` = the step's start sequence,
  ``step_type`` ``OTHER`` and content ``{step_name, step_type_identifier,
  config_snapshot?, input_data_sample?, context_metadata?}``;
* end, if it failed: ``PATCH /result/{result}`` with ``ERROR_TEST_FRAMEWORK`` and
  ``"Pipeline failed at '<name>': <error>"`` (sent before the summary, as the original);
* end: ``POST /result/{result}/trace`` with the end sequence and content
  ``{step_name: "<name> (Summary)", step_type_identifier, status, step_metadata?,
  progress_log?, error_message?}``.

Run and result status spans become ``PATCH /run/{run}`` and ``PATCH /result/{result}``.
Every trace's content also carries an ``otel`` object (trace and span ids, times,
duration) that the original did not have. Values read back from span attributes of
spans from elsewhere (the bridge) are sanitized again, so they cannot smuggle secrets
through.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from hackagent_otel import _records, semconv
from hackagent_otel._enums import EvaluationStatusEnum, StatusEnum, StepTypeEnum
from hackagent_otel._records import Record
from hackagent_otel._sanitize import sanitize, sanitize_text
from hackagent_otel._spanview import SpanView

ERROR_STATUS = EvaluationStatusEnum.ERROR_TEST_FRAMEWORK.value


@dataclass(frozen=True, slots=True)
class Mapped:
    """What one span maps to: records to send, and why anything was left out."""

    records: tuple[Record, ...] = ()
    problems: tuple[str, ...] = ()


NOTHING = Mapped()


def is_hackagent_span(view: SpanView) -> bool:
    return semconv.KIND in view.attributes


def map_start(view: SpanView) -> Mapped:
    """The live start record of a step that has just started."""
    if view.attributes.get(semconv.KIND) != semconv.KIND_STEP:
        return NOTHING
    return _map_with_ids(view, True, lambda _, result_id: (_start_trace(view, result_id),))


def map_end(view: SpanView, *, include_start: bool) -> Mapped:
    """The records of a finished span; ``include_start`` when no live start was sent."""
    kind = view.attributes.get(semconv.KIND)
    if kind == semconv.KIND_STEP:
        return _map_with_ids(
            view, True, lambda _, result_id: _step_end(view, result_id, include_start)
        )
    if kind == semconv.KIND_RUN_STATUS:
        return _map_with_ids(view, False, lambda run_id, _: (_run_update(view, run_id),))
    if kind == semconv.KIND_RESULT_STATUS:
        return _map_with_ids(view, True, lambda _, result_id: (_result_update(view, result_id),))
    return NOTHING


def _map_with_ids(
    view: SpanView, need_result: bool, build: Callable[[str, str], Iterable[Record]]
) -> Mapped:
    """Check the span's ids, then build its records; problems are reported, not raised."""
    ids = _ids(view, need_result=need_result)
    if isinstance(ids, Mapped):
        return ids
    try:
        return Mapped(records=tuple(build(*ids)))
    except _Unmappable as exc:
        return Mapped(problems=(f"span {view.span_id_hex} ({view.name!r}): {exc}",))


class _Unmappable(ValueError):
    """A span that says it is ours but lacks what its records need."""


def _ids(view: SpanView, *, need_result: bool) -> tuple[str, str] | Mapped:
    attrs = view.attributes
    run_id = _uuid_text(attrs.get(semconv.RUN_ID))
    result_id = _uuid_text(attrs.get(semconv.RESULT_ID))
    where = f"span {view.span_id_hex} ({view.name!r})"
    if need_result and result_id is None:
        raw = attrs.get(semconv.RESULT_ID)
        if raw is None:  # no result: spans only, as the original skipped its traces
            return NOTHING
        return Mapped(problems=(f"{where}: result id {raw!r} is not a UUID",))
    if not need_result and run_id is None:
        return Mapped(problems=(f"{where}: run id {attrs.get(semconv.RUN_ID)!r} is not a UUID",))
    return run_id or "", result_id or ""


def _uuid_text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _start_trace(view: SpanView, result_id: str) -> Record:
    attrs = view.attributes
    content: dict[str, Any] = {
        "step_name": _name(view),
        "step_type_identifier": _text(attrs.get(semconv.STEP_TYPE, "")),
    }
    for attribute, key in (
        (semconv.STEP_CONFIG, "config_snapshot"),
        (semconv.STEP_INPUT, "input_data_sample"),
        (semconv.STEP_CONTEXT_METADATA, "context_metadata"),
    ):
        if attribute in attrs:
            content[key] = _json_value(view, attrs[attribute])
    content["otel"] = _otel(view, ended=False)
    return _trace(view, result_id, _sequence(attrs, semconv.STEP_SEQUENCE_START), content)


def _step_end(view: SpanView, result_id: str, include_start: bool) -> tuple[Record, ...]:
    attrs = view.attributes
    name = _name(view)
    failed = attrs.get(semconv.STEP_STATUS) == semconv.STEP_STATUS_FAILED or (
        view.status == "ERROR" and semconv.STEP_STATUS not in attrs
    )
    records: list[Record] = [_start_trace(view, result_id)] if include_start else []
    error = _text(attrs.get(semconv.STEP_ERROR_MESSAGE, "")) if failed else ""
    if failed:
        records.append(
            _result_patch(
                view,
                result_id,
                {
                    "evaluation_status": ERROR_STATUS,
                    "evaluation_notes": f"Pipeline failed at '{name}': {error}",
                },
            )
        )
    content: dict[str, Any] = {
        "step_name": f"{name} (Summary)",
        "step_type_identifier": _text(attrs.get(semconv.STEP_TYPE, "")),
        "status": semconv.STEP_STATUS_FAILED if failed else semconv.STEP_STATUS_COMPLETED,
    }
    metadata, progress = _collected(view)
    if metadata:
        content["step_metadata"] = metadata
    if progress:
        content["progress_log"] = progress
    if error:
        content["error_message"] = error
    content["otel"] = _otel(view, ended=True)
    records.append(_trace(view, result_id, _sequence(attrs, semconv.STEP_SEQUENCE_END), content))
    return tuple(records)


def _collected(view: SpanView) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The step's metadata (last value per key) and progress log, from its events."""
    metadata: dict[str, Any] = {}
    progress: list[dict[str, Any]] = []
    for event in view.events:
        if event.name == semconv.EVENT_METADATA:
            key = event.attributes.get(semconv.METADATA_KEY)
            if isinstance(key, str):
                metadata.pop(key, None)
                metadata[key] = _json_value(view, event.attributes.get(semconv.METADATA_VALUE))
        elif event.name == semconv.EVENT_PROGRESS:
            metrics = _json_value(view, event.attributes.get(semconv.PROGRESS_METRICS, "{}"))
            entry = {"message": _text(event.attributes.get(semconv.PROGRESS_MESSAGE, ""))}
            if isinstance(metrics, dict):
                entry.update((k, v) for k, v in metrics.items() if k != "message")
            progress.append(entry)
    return (metadata if view.sanitized else sanitize(metadata)), progress[-20:]


def _run_update(view: SpanView, run_id: str) -> Record:
    status = _text(view.attributes.get(semconv.RUN_STATUS, ""))
    if status not in StatusEnum._value2member_map_:
        raise _Unmappable(f"run status {status!r} is not a StatusEnum value")
    return Record(
        kind=_records.RUN_UPDATE,
        method="PATCH",
        path=f"/run/{run_id}",
        body={"status": status},
        ordering_key=run_id,
        created_at=_seconds(view.end_time_ns or view.start_time_ns),
    )


def _result_update(view: SpanView, result_id: str) -> Record:
    attrs = view.attributes
    status = _text(attrs.get(semconv.RESULT_EVALUATION_STATUS, ""))
    if status not in EvaluationStatusEnum._value2member_map_:
        raise _Unmappable(f"evaluation status {status!r} is not an EvaluationStatusEnum value")
    body: dict[str, Any] = {
        "evaluation_status": status,
        "evaluation_notes": _text(attrs.get(semconv.RESULT_EVALUATION_NOTES) or "Status updated"),
    }
    if semconv.RESULT_AGENT_SPECIFIC_DATA in attrs:
        body["agent_specific_data"] = _json_value(view, attrs[semconv.RESULT_AGENT_SPECIFIC_DATA])
    return _result_patch(view, result_id, body)


def _result_patch(view: SpanView, result_id: str, body: dict[str, Any]) -> Record:
    return Record(
        kind=_records.RESULT_UPDATE,
        method="PATCH",
        path=f"/result/{result_id}",
        body=body,
        ordering_key=result_id,
        created_at=_seconds(view.end_time_ns or view.start_time_ns),
    )


def _trace(view: SpanView, result_id: str, sequence: int, content: dict[str, Any]) -> Record:
    step_type = _text(view.attributes.get(semconv.STEP_TRACE_TYPE, StepTypeEnum.OTHER.value))
    if step_type not in StepTypeEnum._value2member_map_:
        step_type = StepTypeEnum.OTHER.value
    return Record(
        kind=_records.TRACE,
        method="POST",
        path=f"/result/{result_id}/trace",
        body={"sequence": sequence, "step_type": step_type, "content": content},
        ordering_key=result_id,
        created_at=_seconds(view.end_time_ns or view.start_time_ns),
    )


def _sequence(attrs: Mapping[str, Any], key: str) -> int:
    value = attrs.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Unmappable(f"{key} is {value!r}, not an integer")
    return value


def _otel(view: SpanView, *, ended: bool) -> dict[str, Any]:
    otel: dict[str, Any] = {
        "trace_id": view.trace_id_hex,
        "span_id": view.span_id_hex,
        "start_time": _iso(view.start_time_ns),
    }
    if view.parent_span_id:
        otel["parent_span_id"] = format(view.parent_span_id, "016x")
    if ended and view.end_time_ns is not None:
        otel["end_time"] = _iso(view.end_time_ns)
        otel["duration_ms"] = round((view.end_time_ns - view.start_time_ns) / 1e6, 3)
    return otel


def _name(view: SpanView) -> str:
    return _text(view.attributes.get(semconv.STEP_NAME, view.name))


def _text(value: Any) -> str:
    return value if isinstance(value, str) and len(value) <= 4096 else sanitize_text(value)


def _json_value(view: SpanView, value: Any) -> Any:
    """A JSON attribute read back; text that is not JSON is kept as text.

    Values from spans of another process (the bridge) are sanitized again; this
    process's own tracker already sanitized what it wrote.
    """
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    return value if view.sanitized else sanitize(value)


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _seconds(ns: int) -> float:
    return ns / 1e9
