"""``Tracker`` and ``Context``: hackagent's per-goal tracking, re-made on OpenTelemetry.

One Result per goal, a trace per attempt, evaluation or custom entry, a verdict per goal,
as the original sends them, without the attack ever waiting on the network:

* a goal is a span of its run's trace (``hackagent.goal``), from its Result's creation
  to its verdict, carrying the goal's index, text, attack type and verdict;
* the Result's creation, each trace and the verdict are zero-length spans under it,
  which the mapping turns into ``POST /run/{run}/result``, ``POST /result/{id}/trace``
  and ``PATCH /result/{id}``. They are ended at once, so a Collector and the bridge see
  them as soon as the in-process exporter does;
* the API assigns the Result's id in its 201 answer. Until then the goal is known by a
  ref of this process's own (``goal:<uuid>``); its records name the ref and delivery
  fills the id in when the answer comes (in memory, in the outbox, across a crash).
  Pipeline code that reads the id (``ctx.result_id``, ``get_result_id``) waits for it,
  bounded by one setting (``HACKAGENT_RESULT_ID_TIMEOUT``, 5 s by default), and gets
  ``None`` past the bound, as the original did when a creation failed.

An attempt happens inside a pipeline step but belongs to a goal: its span's parent is
the goal's span, and it links to the step that was current when it was recorded.
Interaction traces also carry the OpenTelemetry GenAI attributes their data maps onto
(model, input and output messages, token usage).

OpenTelemetry API only, like the step tracker; content is sanitized (secrets redacted,
sizes capped) before it leaves the caller, in traces and goal metadata alike, where the
original sent both as they were.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link
from opentelemetry.util.types import AttributeValue

from hackagent_otel import _tracer, semconv
from hackagent_otel._enums import EvaluationStatusEnum, StepTypeEnum, enum_value
from hackagent_otel._forksafe import register, renew_after_fork
from hackagent_otel._json import compact_encoder, string_encoder
from hackagent_otel._routing import routes
from hackagent_otel._runs import runs
from hackagent_otel._tracker import stats

__all__ = ["DEFAULT_RESULT_ID_TIMEOUT", "Context", "Tracker", "set_id_resolver"]

_logger = logging.getLogger("hackagent_otel")

#: Seconds a read of a goal's Result id waits for its creation's answer, by default.
DEFAULT_RESULT_ID_TIMEOUT = 5.0

#: A goal's text on its spans and records is capped at this many characters.
MAX_GOAL_CHARS = 16_384
_OTHER = StepTypeEnum.OTHER.value
#: Encodes values the sanitizer already made JSON-safe (as ``Sanitizer.dumps`` does).
_encode = compact_encoder(ensure_ascii=False)

#: ``(run_id, ref, timeout) -> id or None``: how a goal's Result id is learnt, set by
#: ``configure()`` (the delivery that sends the run's records knows the answers).
IdResolver = Callable[[str, str, float], "str | None"]


class _Ids:
    """Where ids come from, and how long a read may wait for one."""

    def __init__(self) -> None:
        self.resolver: IdResolver | None = None
        self.timeout = DEFAULT_RESULT_ID_TIMEOUT

    def resolve(self, run_id: str, ref: str, deadline: float) -> str | None:
        resolver = self.resolver
        if resolver is None:
            return None
        try:
            return resolver(run_id, ref, max(0.0, deadline - time.monotonic()))
        except Exception:
            stats.add("internal_errors")
            _logger.exception("hackagent_otel: looking up the Result id of %s failed", ref)
            return None


_ids = _Ids()


def set_id_resolver(resolver: IdResolver | None, timeout: float | None = None) -> None:
    """Tell goal tracking where Result ids come from (``configure()`` does)."""
    _ids.resolver = resolver
    if timeout is not None:
        _ids.timeout = timeout


class _SequenceLock:
    """The lock a goal's sequence numbers are taken under (new in a forked child)."""

    __slots__ = ("__weakref__", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        renew_after_fork(self, "lock")


class Context:
    """The tracking state of one goal: same fields as hackagent's ``Context`` dataclass.

    ``result_id`` is the id the API gave the goal's Result. Read before the creation's
    answer has come, it waits for it (bounded, see the module docstring); ``None`` past
    the bound or when the creation was refused. ``sequence_counter`` is the last
    sequence number used on the Result; ``traces`` has every trace made for the goal, as
    sent (sanitized).
    """

    def __init__(
        self,
        goal: str,
        goal_index: int,
        result_id: str | None = None,
        sequence_counter: int = 0,
        traces: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
        is_finalized: bool = False,
    ) -> None:
        self.goal = goal
        self.goal_index = goal_index
        self._result_id = result_id
        self.sequence_counter = sequence_counter
        self.traces: list[dict[str, Any]] = traces if traces is not None else []
        self.metadata: dict[str, Any] = metadata if metadata is not None else {}
        self.is_finalized = is_finalized
        self._order = _SequenceLock()
        self._ref: str | None = None
        self._run_id: str | None = None
        self._span: trace.Span | None = None
        #: Set with the span: the context it is current in (its traces' parent) and the
        #: attributes every trace of this goal carries, made once per goal.
        self._under: otel_context.Context | None = None
        self._trace_identity: dict[str, AttributeValue] = {}

    @property
    def result_id(self) -> str | None:
        """The API's id of the goal's Result (waits, bounded, for its creation's answer)."""
        if self._result_id is None and self._ref is not None:
            self._result_id = self._resolve_by(time.monotonic() + _ids.timeout)
        return self._result_id

    @result_id.setter
    def result_id(self, value: str | None) -> None:
        self._result_id = value

    def _resolve_by(self, deadline: float) -> str | None:
        """The Result id, waiting at most until ``deadline`` (monotonic seconds)."""
        if self._result_id is not None or self._ref is None or self._run_id is None:
            return self._result_id
        found = _ids.resolve(self._run_id, self._ref, deadline)
        if found is not None:
            self._result_id = found
        return found

    def _next_sequence(self) -> int:
        """The next sequence number on this goal's Result (shared with a linked step
        tracker, see ``TrackingContext.delegate_sequence_to``)."""
        with self._order.lock:
            self.sequence_counter += 1
            return self.sequence_counter

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.goal,
            self.goal_index,
            self._result_id,
            self.sequence_counter,
            self.traces,
            self.metadata,
            self.is_finalized,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass is

    def __repr__(self) -> str:
        return (
            f"Context(goal={self.goal!r}, goal_index={self.goal_index!r}, "
            f"result_id={self._result_id!r}, sequence_counter={self.sequence_counter!r}, "
            f"traces=<{len(self.traces)}>, metadata={self.metadata!r}, "
            f"is_finalized={self.is_finalized!r})"
        )


class Tracker:
    """Tracks an attack per goal: a drop-in for ``hackagent.router.tracking.Tracker``.

    Same methods, arguments and return values. Enabled with a run id; the client (a
    hackagent ``AuthenticatedClient``, an ``httpx.Client`` or a
    :class:`hackagent_otel.HackAgentClient`) adds in-process delivery of the records,
    as for :class:`~hackagent_otel.TrackingContext`. Without a client the goals are
    still spans (for a Collector and the bridge), where the original did nothing.
    """

    def __init__(
        self,
        client: Any,
        run_id: str | None,
        logger: logging.Logger | None = None,
        attack_type: str | None = None,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.logger = logger or _logger
        self.attack_type = attack_type
        self._goal_contexts: dict[int, Context] = {}

    @property
    def is_enabled(self) -> bool:
        """Whether goals are tracked: a run id is enough (see the class docstring)."""
        return self.run_id is not None

    def _run_uuid(self) -> str | None:
        if not self.run_id:
            return None
        try:
            return str(uuid.UUID(str(self.run_id)))
        except ValueError:
            self.logger.warning("Invalid UUID format for run_id: %s", self.run_id)
            return None

    # -- goals ---------------------------------------------------------------------
    def create_goal_result(
        self,
        goal: str,
        goal_index: int,
        initial_metadata: dict[str, Any] | None = None,
    ) -> Context:
        """Create the goal's Result (in the background) and return its Context at once."""
        ctx = Context(goal=goal, goal_index=goal_index, metadata=initial_metadata or {})
        self._goal_contexts[goal_index] = ctx
        if not self.is_enabled:
            self.logger.debug("Tracking disabled - goal %s won't be tracked", goal_index)
            return ctx
        run_id = self._run_uuid()
        if run_id is None:
            return ctx
        try:
            self._start_goal(ctx, run_id, initial_metadata or {})
        except Exception:
            self._internal_error("creating the Result of goal %s", goal_index)
        return ctx

    def _start_goal(self, ctx: Context, run_id: str, initial_metadata: dict[str, Any]) -> None:
        if self.client is not None:
            routes.register(run_id, self.client)
        ref = f"goal:{uuid.uuid4()}"
        sanitizer = _tracer.source.sanitizer
        goal_text = sanitizer.sanitize_text(ctx.goal, MAX_GOAL_CHARS)
        index = ctx.goal_index if isinstance(ctx.goal_index, int) else 0
        identity: dict[str, AttributeValue] = {
            semconv.RUN_ID: run_id,
            semconv.GOAL_REF: ref,
            semconv.GOAL_INDEX: index,
            semconv.GOAL_TEXT: goal_text,
        }
        if self.attack_type is not None:
            identity[semconv.ATTACK_TYPE] = sanitizer.sanitize_text(self.attack_type, 256)
        span = _tracer.start_span(
            f"{semconv.SPAN_GOAL} {index}",
            runs.parent_for(run_id),
            {semconv.KIND: semconv.KIND_GOAL, **identity},
            record_exception=False,
            set_status_on_exception=False,
        )
        ctx._ref, ctx._run_id, ctx._span = ref, run_id, span
        ctx._under = trace.set_span_in_context(span)
        ctx._trace_identity = {
            semconv.KIND: semconv.KIND_GOAL_TRACE,
            semconv.RUN_ID: run_id,
            semconv.GOAL_REF: ref,
            semconv.GOAL_INDEX: index,
        }
        _opened(ctx)
        setup_sequence = ctx._next_sequence()
        _tracer.start_span(
            semconv.SPAN_GOAL_CREATE,
            ctx._under,
            {
                semconv.KIND: semconv.KIND_GOAL_CREATE,
                **identity,
                semconv.GOAL_METADATA: sanitizer.dumps(initial_metadata),
                semconv.GOAL_SETUP_SEQUENCE: setup_sequence,
            },
        ).end()
        setup = {"goal": ctx.goal, "goal_index": ctx.goal_index, "attack_type": self.attack_type}
        ctx.traces.append(
            {
                "sequence": setup_sequence,
                "step_name": "Goal Setup",
                "step_type": _OTHER,
                "content": sanitizer.sanitize(setup),
            }
        )
        self.logger.info("Created result for goal %s (%s)", ctx.goal_index, ref)

    # -- traces ----------------------------------------------------------------------
    def add_interaction_trace(
        self,
        ctx: Context,
        request: dict[str, Any],
        response: Any,
        step_name: str = "Agent Interaction",
        step_type: StepTypeEnum | str = StepTypeEnum.OTHER,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """A trace of one request to the target and what it answered (an attempt)."""
        try:
            content: dict[str, Any] = {
                "step_name": step_name,
                "request": request,
                "response": _response_text(response),
            }
            if metadata:
                content["metadata"] = metadata
        except Exception:
            self._internal_error("recording an interaction of goal %s", ctx.goal_index)
            return
        self._add_trace(
            ctx,
            step_name,
            step_type,
            content,
            "interaction",
            lambda sanitized: _genai_attributes(sanitized, response),
        )

    def add_evaluation_trace(
        self,
        ctx: Context,
        evaluation_result: Any,
        score: float | None = None,
        explanation: str | None = None,
        evaluator_name: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """A trace of one evaluation of the goal's attempts."""
        content: dict[str, Any] = {
            "step_name": "Evaluation",
            "evaluator": evaluator_name,
            "result": evaluation_result,
        }
        if score is not None:
            content["score"] = score
        if explanation:
            content["explanation"] = explanation
        if metadata:
            content["metadata"] = metadata
        self._add_trace(ctx, "Evaluation", StepTypeEnum.OTHER, content, "evaluation")

    def add_custom_trace(
        self,
        ctx: Context,
        step_name: str,
        content: dict[str, Any],
        step_type: StepTypeEnum | str = StepTypeEnum.OTHER,
    ) -> None:
        """A trace with content of the caller's own (sanitized like everything else)."""
        self._add_trace(ctx, step_name, step_type, content, "custom")

    def _add_trace(
        self,
        ctx: Context,
        step_name: str,
        step_type: StepTypeEnum | str,
        content: Any,
        origin: str,
        genai: Callable[[Any], dict[str, AttributeValue]] | None = None,
    ) -> None:
        try:
            type_value = self._step_type(step_type)
            sanitizer = _tracer.source.sanitizer
            name = step_name if isinstance(step_name, str) else sanitizer.sanitize_text(step_name)
            # One walk gives both the local copy and the attribute's text (parsing the
            # text back would cost a third of an attempt).
            sanitized = sanitizer.sanitize(content)
            text = _encode(sanitized)
            sequence = ctx._next_sequence()
            ctx.traces.append(
                {
                    "sequence": sequence,
                    "step_name": name,
                    "step_type": type_value,
                    "content": sanitized,
                }
            )
            span = ctx._span
            if span is None or ctx._under is None:
                return  # not tracked (no run id), as the original kept such traces locally
            current = trace.get_current_span().get_span_context()
            links = (
                [Link(current)] if current.is_valid and current != span.get_span_context() else []
            )
            attributes: dict[str, AttributeValue] = {
                **ctx._trace_identity,
                semconv.TRACE_SEQUENCE: sequence,
                semconv.TRACE_STEP_NAME: name,
                semconv.TRACE_STEP_TYPE: type_value,
                semconv.TRACE_CONTENT: text,
                semconv.TRACE_ORIGIN: origin,
            }
            if genai is not None:
                attributes.update(genai(sanitized))
            _tracer.start_span(name, ctx._under, attributes, links=links).end()
        except Exception:
            self._internal_error("recording a trace of goal %s", ctx.goal_index)

    def _step_type(self, step_type: object) -> str:
        try:
            return enum_value(StepTypeEnum, step_type)
        except ValueError as exc:
            self.logger.error("hackagent_otel: %s; the trace is sent as OTHER", exc)
            return _OTHER

    # -- verdicts --------------------------------------------------------------------
    def finalize_goal(
        self,
        ctx: Context,
        success: bool,
        evaluation_notes: str | None = None,
        final_metadata: dict[str, Any] | None = None,
    ) -> bool:
        """Record the goal's verdict, once; True once it is queued for delivery."""
        return self._finalize(ctx, success, evaluation_notes, final_metadata, None)

    def _finalize(
        self,
        ctx: Context,
        success: bool,
        evaluation_notes: str | None,
        final_metadata: dict[str, Any] | None,
        error: BaseException | None,
    ) -> bool:
        if ctx.is_finalized:
            self.logger.warning("Goal %s already finalized", ctx.goal_index)
            return False
        ctx.is_finalized = True
        if final_metadata:
            ctx.metadata.update(final_metadata)
        ctx.metadata["success"] = success
        ctx.metadata["total_traces"] = len(ctx.traces)
        span = ctx._span
        if span is None or ctx._ref is None or ctx._run_id is None:
            return False
        try:
            status = (
                EvaluationStatusEnum.SUCCESSFUL_JAILBREAK
                if success
                else EvaluationStatusEnum.FAILED_JAILBREAK
            ).value
            notes = evaluation_notes or (
                "Goal completed successfully" if success else "Goal evaluation failed"
            )
            data = {
                **ctx.metadata,
                "goal": ctx.goal,
                "goal_index": ctx.goal_index,
                "total_traces": len(ctx.traces),
            }
            verdict: dict[str, AttributeValue] = {
                semconv.RESULT_EVALUATION_STATUS: status,
                semconv.GOAL_SUCCESS: bool(success),
                semconv.GOAL_TOTAL_TRACES: len(ctx.traces),
            }
            sanitizer = _tracer.source.sanitizer
            _tracer.start_span(
                semconv.SPAN_GOAL_VERDICT,
                trace.set_span_in_context(span),
                {
                    semconv.KIND: semconv.KIND_GOAL_VERDICT,
                    semconv.RUN_ID: ctx._run_id,
                    semconv.GOAL_REF: ctx._ref,
                    **verdict,
                    semconv.RESULT_EVALUATION_NOTES: sanitizer.sanitize_text(notes),
                    semconv.RESULT_AGENT_SPECIFIC_DATA: sanitizer.dumps(data),
                },
            ).end()
            _tracer.set_attributes(span, verdict)
            if error is not None:
                _tracer.record_exception(span, error)
            _end_goal_span(ctx)
        except Exception:
            self._internal_error("finalizing goal %s", ctx.goal_index)
            return False
        self.logger.info(
            "Finalized goal %s (%s): %s",
            ctx.goal_index,
            ctx._ref,
            "SUCCESS" if success else "FAILED",
        )
        return True

    @contextmanager
    def track_goal(
        self,
        goal: str,
        goal_index: int,
        initial_metadata: dict[str, Any] | None = None,
    ) -> Iterator[Context]:
        """Create the goal's Result, yield its Context; an exception from the block
        finalizes the goal as failed (with the exception on its span) and is re-raised."""
        ctx = self.create_goal_result(goal, goal_index, initial_metadata)
        try:
            yield ctx
        except Exception as exc:
            if not ctx.is_finalized:
                text = _tracer.source.sanitizer.sanitize_text(exc)
                self._finalize(ctx, False, f"Attack failed with exception: {text[:200]}", None, exc)
            raise
        finally:
            if not ctx.is_finalized:
                self.logger.warning(
                    "Goal %s not explicitly finalized - defaulting to NOT_EVALUATED", goal_index
                )

    # -- look-ups --------------------------------------------------------------------
    def get_goal_context(self, goal_index: int) -> Context | None:
        return self._goal_contexts.get(goal_index)

    def get_goal_context_by_goal(self, goal: str) -> Context | None:
        for ctx in self._goal_contexts.values():
            if ctx.goal == goal:
                return ctx
        return None

    def get_result_id(self, goal_index: int) -> str | None:
        """The API's id of the goal's Result (waits, bounded, for its creation's answer)."""
        ctx = self._goal_contexts.get(goal_index)
        return ctx.result_id if ctx else None

    def get_all_contexts(self) -> dict[int, Context]:
        return self._goal_contexts.copy()

    def get_summary(self) -> dict[str, Any]:
        contexts = list(self._goal_contexts.values())
        total = len(contexts)
        successful = sum(1 for ctx in contexts if ctx.metadata.get("success", False))
        finalized = sum(1 for ctx in contexts if ctx.is_finalized)
        total_traces = sum(len(ctx.traces) for ctx in contexts)
        return {
            "total_goals": total,
            "successful_attacks": successful,
            "finalized": finalized,
            "total_traces": total_traces,
            "success_rate": (successful / total * 100) if total > 0 else 0,
            "avg_traces_per_goal": (total_traces / total) if total > 0 else 0,
        }

    def _internal_error(self, what: str, *args: Any) -> None:
        stats.add("internal_errors")
        self.logger.exception("hackagent_otel: internal error " + what, *args)


def _response_text(response: Any) -> Any:
    """A target's answer reduced as the original reduced it: an OpenAI-style object's
    first choice, a dict's ``generated_text``/``processed_response``/``content``, a
    string as is, anything else as ``str()``."""
    if response is None:
        return None
    choices = getattr(response, "choices", None)
    if choices:
        try:
            return choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            pass
    if isinstance(response, dict):
        return (
            response.get("generated_text")
            or response.get("processed_response")
            or response.get("content")
        )
    if isinstance(response, str):
        return response
    return _tracer.source.sanitizer.sanitize_text(response)


def _genai_attributes(content: Any, response: Any) -> dict[str, AttributeValue]:
    """The OpenTelemetry GenAI attributes an attempt's data maps onto, where it does.

    ``content`` is the attempt's sanitized content (its request and response text are
    reused as they are, already redacted and capped); ``response`` is the target's
    answer as given, read only for its model name and token usage.
    """
    found: dict[str, AttributeValue] = {semconv.GEN_AI_OPERATION_NAME: "chat"}
    request = content.get("request") if isinstance(content, dict) else None
    if isinstance(request, dict):
        model = request.get("model")
        if isinstance(model, str):
            found[semconv.GEN_AI_REQUEST_MODEL] = model
        messages = request.get("messages")
        if isinstance(messages, list):
            found[semconv.GEN_AI_INPUT_MESSAGES] = _encode([_genai_message(m) for m in messages])
        elif isinstance(request.get("prompt"), str):
            found[semconv.GEN_AI_INPUT_MESSAGES] = _one_text_message("user", request["prompt"])
    model = _answer_field(response, "model")
    if isinstance(model, str):
        found[semconv.GEN_AI_RESPONSE_MODEL] = _tracer.source.sanitizer.sanitize_text(model, 256)
    usage = _answer_field(response, "usage")
    for names, attribute in (
        ()
        if usage is None
        else (
            (("prompt_tokens", "input_tokens"), semconv.GEN_AI_USAGE_INPUT_TOKENS),
            (("completion_tokens", "output_tokens"), semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
        )
    ):
        for name in names:
            count = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, None)
            if isinstance(count, int) and not isinstance(count, bool):
                found[attribute] = count
                break
    text = content.get("response") if isinstance(content, dict) else None
    if isinstance(text, str):
        found[semconv.GEN_AI_OUTPUT_MESSAGES] = _one_text_message("assistant", text)
    return found


def _answer_field(response: Any, name: str) -> Any:
    """``response.<name>``, else ``response[name]`` for a mapping (a plain dict has no
    such attribute: it is not looked up, which would raise and catch inside getattr)."""
    found = None if type(response) is dict else getattr(response, name, None)
    if found is None and isinstance(response, dict):
        found = response.get(name)
    return found


_quote = string_encoder(ensure_ascii=False)


def _one_text_message(role: str, text: str) -> str:
    """``_encode([_genai_message({"role": role, "content": text})])``, written around
    the one string that varies (an attempt has two; encoding the lists costs more)."""
    return (
        '[{"role":' + _quote(role) + ',"parts":[{"type":"text","content":' + _quote(text) + "}]}]"
    )


def _genai_message(message: Any) -> dict[str, Any]:
    """A chat message in the GenAI conventions' shape: a role and text parts."""
    if not isinstance(message, dict):
        return {"role": "user", "parts": [{"type": "text", "content": message}]}
    content = message.get("content")
    parts = content if isinstance(content, list) else [{"type": "text", "content": content}]
    return {"role": message.get("role", "user"), "parts": parts}


# -- goal spans still open at exit -----------------------------------------------------
#: Goals whose span is open, by identity (a Context is unhashable, as a dataclass is).
_open_goals: dict[int, weakref.ref[Context]] = {}
_open_lock = threading.Lock()
_exit_hook = False


def _opened(ctx: Context) -> None:
    global _exit_hook
    with _open_lock:
        key = id(ctx)
        _open_goals[key] = weakref.ref(ctx, lambda _: _open_goals.pop(key, None))
        if not _exit_hook:
            # After the run's root span exists, hence after its hook: atexit runs
            # last-in first-out, so goals end before their runs and the providers.
            _exit_hook = True
            atexit.register(end_open_goals)


def _end_goal_span(ctx: Context) -> None:
    """End the goal's span once; it stays the parent of traces recorded after it."""
    with _open_lock:
        was_open = _open_goals.pop(id(ctx), None) is not None
    if was_open and ctx._span is not None:
        ctx._span.end()


def end_open_goals() -> None:
    """End the spans of goals never finalized (at exit and ``shutdown()``), so Jaeger
    shows them under their run rather than missing."""
    with _open_lock:
        contexts = [ctx for ref in _open_goals.values() if (ctx := ref()) is not None]
    for ctx in contexts:
        try:
            if ctx._span is not None:
                ctx._span.set_attribute(semconv.RESULT_EVALUATION_STATUS, "NOT_EVALUATED")
            _end_goal_span(ctx)
        except Exception:
            stats.add("internal_errors")


def _renew_open_lock() -> None:
    global _open_lock
    _open_lock = threading.Lock()


register(_renew_open_lock)
