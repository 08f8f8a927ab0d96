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

Goals (the per-goal ``Tracker``): a creation span becomes ``POST /run/{run}/result``,
which ``provides`` the goal's ref (its answer's id is bound to it), and the "Goal
Setup" trace; trace and verdict spans become ``POST /result/{ref}/trace`` and
``PATCH /result/{ref}``, which ``need`` the ref: delivery fills the id in. A step
linked to a goal (goal 0 of a coordinator) names the goal's ref instead of a result
id, so its records wait for the same creation. All of a goal's records share the ref
as their ordering key.
Every trace's content also carries an ``otel`` object (trace and span ids, times,
duration) that the original did not have. Values read back from span attributes of
spans from elsewhere (the bridge) are sanitized again, so they cannot smuggle secrets
through: JSON values by key, JSON-valued attributes whose text is not JSON by the keys
written in it (:meth:`~hackagent_otel._sanitize.Sanitizer.scrub_structured_text`), free
text (names, messages, notes) by known secrets. Error messages and notes are scrubbed of
known secrets for this process's own spans too: a secret learned after the step failed
is still kept out of its records. Which sanitizer does this is the caller's: the one
in force for this process's tracker (the SDK side), or the bridge's own; mapping
touches no other state.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from hackagent_otel import _records, semconv
from hackagent_otel._enums import EvaluationStatusEnum, StatusEnum, StepTypeEnum
from hackagent_otel._json import json_decoder
from hackagent_otel._records import Record
from hackagent_otel._sanitize import Sanitizer
from hackagent_otel._spanview import SpanView

ERROR_STATUS = EvaluationStatusEnum.ERROR_TEST_FRAMEWORK.value


@dataclass(frozen=True, slots=True)
class Mapped:
    """What one span maps to: records to send, and why anything was left out."""

    records: tuple[Record, ...] = ()
    problems: tuple[str, ...] = ()


NOTHING = Mapped()


def map_start(view: SpanView, sanitizer: Sanitizer) -> Mapped:
    """The live start record of a step that has just started."""
    if view.attributes.get(semconv.KIND) != semconv.KIND_STEP:
        return NOTHING
    target = _result_target(view)
    if isinstance(target, Mapped):
        return target
    try:
        return Mapped(records=(_start_trace(view, target, sanitizer),))
    except _Unmappable as exc:
        return Mapped(problems=(f"{_where(view)}: {exc}",))


def map_end(view: SpanView, sanitizer: Sanitizer, *, include_start: bool) -> Mapped:
    """The records of a finished span; ``include_start`` when no live start was sent.
    ``sanitizer`` cleans what is read back (see the module docstring)."""
    kind = view.attributes.get(semconv.KIND)
    if not isinstance(kind, str):  # not ours (or hostile: a list is no kind)
        return NOTHING
    try:
        if kind == semconv.KIND_RUN_STATUS:
            run_id = _run_id(view)
            if isinstance(run_id, Mapped):
                return run_id
            return Mapped((_run_update(view, run_id, sanitizer),))
        if kind == semconv.KIND_GOAL_CREATE:
            return Mapped(records=_goal_creation(view, sanitizer))
        if kind not in _ON_A_RESULT:
            return NOTHING
        target = _result_target(view)
        if isinstance(target, Mapped):
            return target
        if kind == semconv.KIND_STEP:
            return Mapped(records=_step_end(view, target, include_start, sanitizer))
        if kind == semconv.KIND_GOAL_TRACE:
            return Mapped(records=(_goal_trace(view, target, sanitizer),))
        return Mapped(records=(_result_update(view, target, sanitizer),))
    except _Unmappable as exc:
        return Mapped(problems=(f"{_where(view)}: {exc}",))


_ON_A_RESULT = frozenset(
    {
        semconv.KIND_STEP,
        semconv.KIND_RESULT_STATUS,
        semconv.KIND_GOAL_TRACE,
        semconv.KIND_GOAL_VERDICT,
    }
)


class _Unmappable(ValueError):
    """A span that says it is ours but lacks what its records need."""


@dataclass(frozen=True, slots=True)
class _Target:
    """The Result a span's records go to: by its id, or by the goal ref whose creation's
    answer will give the id (``needs``), with the ordering key its records share."""

    path_id: str
    key: str
    needs: str | None = None


def _result_target(view: SpanView) -> _Target | Mapped:
    """Where the span's records go, or why it has none (no result: spans only, as the
    original skipped its traces; a bad id or ref: a problem)."""
    attrs = view.attributes
    raw = attrs.get(semconv.RESULT_ID)
    result_id = _uuid_text(raw)
    if result_id is not None:
        return _Target(result_id, result_id)
    ref = attrs.get(semconv.GOAL_REF)
    if raw is None and ref is not None:
        if not _is_goal_ref(ref):
            return Mapped(problems=(f"{_where(view)}: goal ref {ref!r} is not goal:<uuid>",))
        assert isinstance(ref, str)
        return _Target(_records.REF, ref, ref)
    if raw is None:
        return NOTHING
    return Mapped(problems=(f"{_where(view)}: result id {raw!r} is not a UUID",))


def _is_goal_ref(value: Any) -> bool:
    return (
        isinstance(value, str)
        and value.startswith(GOAL_REF_PREFIX)
        and _uuid_text(value[len(GOAL_REF_PREFIX) :]) is not None
    )


#: A goal ref is this prefix and a UUID.
GOAL_REF_PREFIX = "goal:"


def _run_id(view: SpanView) -> str | Mapped:
    raw = view.attributes.get(semconv.RUN_ID)
    run_id = _uuid_text(raw)
    if run_id is not None:
        return run_id
    return Mapped(problems=(f"{_where(view)}: run id {raw!r} is not a UUID",))


def _where(view: SpanView) -> str:
    return f"span {view.span_id_hex} ({view.name!r})"


#: A UUID already in the form ``str(uuid.UUID(...))`` gives (what our tracker writes).
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _uuid_text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    if value in _canonical_seen:  # a run's and a result's ids come with each of its spans
        return value
    if len(value) == 36 and _CANONICAL_UUID.fullmatch(value):
        if len(_canonical_seen) >= _CANONICAL_SEEN_MAX:
            _canonical_seen.clear()
        _canonical_seen[value] = None
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


#: Canonical UUID texts matched lately (a dict lookup instead of the pattern's 0.3 us);
#: emptied when full.
_canonical_seen: dict[str, None] = {}
_CANONICAL_SEEN_MAX = 4096


def _start_trace(view: SpanView, target: _Target, sanitizer: Sanitizer) -> Record:
    return _start_record(view, target, _Step(view, sanitizer), sanitizer)


class _Step:
    """What a step's records share, worked out once per span."""

    __slots__ = ("created_at", "name", "otel", "trace_type", "type_identifier")

    def __init__(self, view: SpanView, sanitizer: Sanitizer) -> None:
        attrs = view.attributes
        self.name = _free_text(view, attrs.get(semconv.STEP_NAME, view.name), sanitizer)
        self.type_identifier = _free_text(view, attrs.get(semconv.STEP_TYPE, ""), sanitizer)
        self.trace_type = _trace_type(attrs, sanitizer)
        self.created_at = (view.end_time_ns or view.start_time_ns) / 1e9
        #: The start record's ``otel``; the summary's adds the end to a copy.
        self.otel = _otel(view)


def _start_record(view: SpanView, target: _Target, step: _Step, sanitizer: Sanitizer) -> Record:
    attrs = view.attributes
    content: dict[str, Any] = {
        "step_name": step.name,
        "step_type_identifier": step.type_identifier,
    }
    for attribute, key in _START_CONTENT:
        if attribute in attrs:
            content[key] = _json_value(view, attrs[attribute], sanitizer)
    content["otel"] = step.otel
    sequence = _sequence(attrs, semconv.STEP_SEQUENCE_START)
    return _trace_record(target, sequence, step.trace_type, content, step.created_at)


_START_CONTENT = (
    (semconv.STEP_CONFIG, "config_snapshot"),
    (semconv.STEP_INPUT, "input_data_sample"),
    (semconv.STEP_CONTEXT_METADATA, "context_metadata"),
)


def _step_end(
    view: SpanView, target: _Target, include_start: bool, sanitizer: Sanitizer
) -> tuple[Record, ...]:
    attrs = view.attributes
    step = _Step(view, sanitizer)
    name = step.name
    failed = attrs.get(semconv.STEP_STATUS) == semconv.STEP_STATUS_FAILED or (
        view.status == "ERROR" and semconv.STEP_STATUS not in attrs
    )
    records: list[Record] = [_start_record(view, target, step, sanitizer)] if include_start else []
    # Metadata first: a foreign span's secrets under secret keys are learned before its
    # error message is scrubbed.
    metadata, progress = _collected(view, sanitizer)
    error = sanitizer.sanitize_text(attrs.get(semconv.STEP_ERROR_MESSAGE, "")) if failed else ""
    if failed:
        records.append(
            _result_patch(
                target,
                {
                    "evaluation_status": ERROR_STATUS,
                    "evaluation_notes": f"Pipeline failed at '{name}': {error}",
                },
                step.created_at,
            )
        )
    content: dict[str, Any] = {
        "step_name": f"{name} (Summary)",
        "step_type_identifier": step.type_identifier,
        "status": semconv.STEP_STATUS_FAILED if failed else semconv.STEP_STATUS_COMPLETED,
    }
    if metadata:
        content["step_metadata"] = metadata
    if progress:
        content["progress_log"] = progress
    if error:
        content["error_message"] = error
    otel = dict(step.otel)
    if view.end_time_ns is not None:
        otel["end_time"] = _iso(view.end_time_ns)
        otel["duration_ms"] = round((view.end_time_ns - view.start_time_ns) / 1e6, 3)
    content["otel"] = otel
    sequence = _sequence(attrs, semconv.STEP_SEQUENCE_END)
    records.append(_trace_record(target, sequence, step.trace_type, content, step.created_at))
    return tuple(records)


def _collected(view: SpanView, sanitizer: Sanitizer) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The step's metadata (last value per key) and progress log, from its events."""
    metadata: dict[str, Any] = {}
    progress: list[dict[str, Any]] = []
    for event in view.events:
        if event.name == semconv.EVENT_METADATA:
            key = event.attributes.get(semconv.METADATA_KEY)
            if isinstance(key, str):
                metadata.pop(key, None)
                value = event.attributes.get(semconv.METADATA_VALUE)
                metadata[key] = _json_value(view, value, sanitizer)
        elif event.name == semconv.EVENT_PROGRESS:
            raw_metrics = event.attributes.get(semconv.PROGRESS_METRICS, "{}")
            metrics = _json_value(view, raw_metrics, sanitizer)
            message = event.attributes.get(semconv.PROGRESS_MESSAGE, "")
            entry = {"message": _free_text(view, message, sanitizer)}
            if isinstance(metrics, dict):
                entry.update((k, v) for k, v in metrics.items() if k != "message")
            progress.append(entry)
    return (metadata if view.sanitized else sanitizer.resanitize(metadata)), progress[-20:]


def _run_update(view: SpanView, run_id: str, sanitizer: Sanitizer) -> Record:
    status = _text(view.attributes.get(semconv.RUN_STATUS, ""), sanitizer)
    if status not in _RUN_STATUSES:
        raise _Unmappable(f"run status {status!r} is not a StatusEnum value")
    return Record(
        kind=_records.RUN_UPDATE,
        method="PATCH",
        path=f"/run/{run_id}",
        body={"status": status},
        ordering_key=run_id,
        created_at=_seconds(view.end_time_ns or view.start_time_ns),
    )


def _result_update(view: SpanView, target: _Target, sanitizer: Sanitizer) -> Record:
    attrs = view.attributes
    status = _text(attrs.get(semconv.RESULT_EVALUATION_STATUS, ""), sanitizer)
    if status not in _EVALUATION_STATUSES:
        raise _Unmappable(f"evaluation status {status!r} is not an EvaluationStatusEnum value")
    body: dict[str, Any] = {
        "evaluation_status": status,
        "evaluation_notes": sanitizer.sanitize_text(
            attrs.get(semconv.RESULT_EVALUATION_NOTES) or "Status updated"
        ),
    }
    if semconv.RESULT_AGENT_SPECIFIC_DATA in attrs:
        data = attrs[semconv.RESULT_AGENT_SPECIFIC_DATA]
        body["agent_specific_data"] = _json_value(view, data, sanitizer)
    return _result_patch(target, body, _seconds(view.end_time_ns or view.start_time_ns))


_RUN_STATUSES = frozenset(StatusEnum._value2member_map_)
_EVALUATION_STATUSES = frozenset(EvaluationStatusEnum._value2member_map_)
_STEP_TYPES = frozenset(StepTypeEnum._value2member_map_)
_OTHER = StepTypeEnum.OTHER.value
_NOT_EVALUATED = EvaluationStatusEnum.NOT_EVALUATED.value


def _result_patch(target: _Target, body: dict[str, Any], created_at: float) -> Record:
    return Record(
        kind=_records.RESULT_UPDATE,
        method="PATCH",
        path=f"/result/{target.path_id}",
        body=body,
        ordering_key=target.key,
        created_at=created_at,
        needs=target.needs,
    )


def _trace_type(attrs: Mapping[str, Any], sanitizer: Sanitizer) -> str:
    step_type = _text(attrs.get(semconv.STEP_TRACE_TYPE, _OTHER), sanitizer)
    return step_type if step_type in _STEP_TYPES else _OTHER


def _trace_record(
    target: _Target, sequence: int, step_type: str, content: Any, created_at: float
) -> Record:
    return Record(
        kind=_records.TRACE,
        method="POST",
        path=f"/result/{target.path_id}/trace",
        body={"sequence": sequence, "step_type": step_type, "content": content},
        ordering_key=target.key,
        created_at=created_at,
        needs=target.needs,
    )


def _goal_creation(view: SpanView, sanitizer: Sanitizer) -> tuple[Record, ...]:
    """A goal's Result creation (``POST /run/{run}/result``, its id bound to the goal
    ref) and its "Goal Setup" trace, as the original sent them on a 201."""
    attrs = view.attributes
    run_id = _run_id(view)
    if isinstance(run_id, Mapped):
        raise _Unmappable(run_id.problems[0] if run_id.problems else "no run id")
    ref = attrs.get(semconv.GOAL_REF)
    if not _is_goal_ref(ref):
        raise _Unmappable(f"goal ref {ref!r} is not goal:<uuid>")
    assert isinstance(ref, str)
    goal = _text(attrs.get(semconv.GOAL_TEXT, ""), sanitizer)
    index = attrs.get(semconv.GOAL_INDEX)
    if isinstance(index, bool) or not isinstance(index, int):
        raise _Unmappable(f"goal index {index!r} is not an integer")
    attack_type = attrs.get(semconv.ATTACK_TYPE)
    attack = _text(attack_type, sanitizer) if attack_type is not None else None
    metadata = _json_value(view, attrs.get(semconv.GOAL_METADATA, "{}"), sanitizer)
    created_at = _seconds(view.start_time_ns)
    creation = Record(
        kind=_records.RESULT_CREATE,
        method="POST",
        path=f"/run/{run_id}/result",
        body={
            "run": run_id,
            "request_payload": {"goal": goal, "goal_index": index, "attack_type": attack},
            "evaluation_status": _NOT_EVALUATED,
            "agent_specific_data": {
                "goal": goal,
                "goal_index": index,
                **(metadata if isinstance(metadata, dict) else {}),
            },
        },
        ordering_key=ref,
        created_at=created_at,
        provides=ref,
    )
    setup = _trace_record(
        _Target(_records.REF, ref, ref),
        _sequence(attrs, semconv.GOAL_SETUP_SEQUENCE),
        _OTHER,
        {"goal": goal, "goal_index": index, "attack_type": attack},
        created_at,
    )
    return creation, setup


def _goal_trace(view: SpanView, target: _Target, sanitizer: Sanitizer) -> Record:
    """An attempt, evaluation or custom trace of a goal: content as the tracker made it."""
    attrs = view.attributes
    step_type = _text(attrs.get(semconv.TRACE_STEP_TYPE, _OTHER), sanitizer)
    content = _json_value(view, attrs.get(semconv.TRACE_CONTENT, "{}"), sanitizer)
    return _trace_record(
        target,
        _sequence(attrs, semconv.TRACE_SEQUENCE),
        step_type if step_type in _STEP_TYPES else _OTHER,
        content,
        _seconds(view.end_time_ns or view.start_time_ns),
    )


def _sequence(attrs: Mapping[str, Any], key: str) -> int:
    value = attrs.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Unmappable(f"{key} is {value!r}, not an integer")
    return value


def _otel(view: SpanView) -> dict[str, Any]:
    """A trace's ``otel`` as its start record has it (the summary adds the end)."""
    otel: dict[str, Any] = {
        "trace_id": format(view.trace_id, "032x"),
        "span_id": format(view.span_id, "016x"),
        "start_time": _iso(view.start_time_ns),
    }
    if view.parent_span_id:
        otel["parent_span_id"] = format(view.parent_span_id, "016x")
    return otel


def _text(value: Any, sanitizer: Sanitizer) -> str:
    if isinstance(value, str) and len(value) <= 4096:
        return value
    return sanitizer.sanitize_text(value)


def _free_text(view: SpanView, value: Any, sanitizer: Sanitizer) -> str:
    """A name or message: this process's tracker scrubbed its own, others' are scrubbed
    of known secrets here."""
    return _text(value, sanitizer) if view.sanitized else sanitizer.sanitize_text(value)


def _json_value(view: SpanView, value: Any, sanitizer: Sanitizer) -> Any:
    """A JSON attribute read back; text that is not JSON is kept as text.

    Values from spans of another process (the bridge) are sanitized again; this
    process's own tracker already sanitized what it wrote. Their text that is not JSON
    (a Python repr, YAML) has the values of secret-named keys written in it redacted.
    """
    if isinstance(value, str):
        try:
            parsed = _parse_json(value)
        except ValueError:
            pass
        else:
            if view.sanitized:
                return parsed
            if type(parsed) is not str:
                return sanitizer.resanitize_parsed(parsed, len(value))
            value = parsed
    if view.sanitized:
        return value
    if isinstance(value, str):  # what sanitize() makes of a string, scrubbed by key too
        return sanitizer.sanitize_structured_text(value)
    return sanitizer.resanitize(value)


#: ``json.JSONDecoder().decode``, by orjson where it is installed (see :mod:`._json`).
_parse_json = json_decoder()


def _iso(ns: int) -> str:
    """``datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat()`` with ``Z``, by hand.

    The date and time to the second come from a one-entry cache (spans of one request
    share seconds); microseconds are rounded from the float as ``fromtimestamp`` does
    (half to even, a carry into the next second included).
    """
    fraction, whole = math.modf(ns / 1e9)
    micros = round(fraction * 1e6)
    second = int(whole)
    if micros >= 1_000_000:
        micros -= 1_000_000
        second += 1
    if micros < 0 or second < 0:  # before 1970: not worth a fast path
        return _iso_slow(ns)
    global _second_text
    cached_second, prefix = _second_text  # one tuple: no thread sees half of an update
    if cached_second != second:
        prefix = datetime.fromtimestamp(second, tz=timezone.utc).isoformat()[:19]
        _second_text = (second, prefix)
    return f"{prefix}.{micros:06d}Z" if micros else f"{prefix}Z"


_second_text: tuple[int, str] = (-1, "")


def _iso_slow(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _seconds(ns: int) -> float:
    return ns / 1e9
