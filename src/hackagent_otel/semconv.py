"""Attribute, event and span names that hackagent-otel writes on OpenTelemetry spans.

Every name lives here and only here, so the tracker that writes them, the mapping that
reads them and the docs (``docs/semconv.md``) cannot drift apart. Values that hold
structured data (config snapshots, input samples, metadata values, progress metrics)
are JSON strings, already sanitized and size-capped.
"""

from __future__ import annotations

from typing import Final

NAMESPACE: Final = "hackagent"

#: Instrumentation scope name of the tracer the tracker uses.
TRACER_NAME: Final = "hackagent_otel"

# -- what a span is -----------------------------------------------------------------
#: Which kind of hackagent span this is; one of the ``KIND_*`` values below.
KIND: Final = "hackagent.kind"
KIND_RUN: Final = "run"
KIND_STEP: Final = "step"
KIND_RUN_STATUS: Final = "run_status"
KIND_RESULT_STATUS: Final = "result_status"
KIND_GOAL: Final = "goal"
KIND_GOAL_CREATE: Final = "goal_create"
KIND_GOAL_TRACE: Final = "goal_trace"
KIND_GOAL_VERDICT: Final = "goal_verdict"

# -- routing ------------------------------------------------------------------------
RUN_ID: Final = "hackagent.run.id"
RESULT_ID: Final = "hackagent.result.id"

# -- steps --------------------------------------------------------------------------
STEP_NAME: Final = "hackagent.step.name"
#: The caller's step type identifier, e.g. ``"STEP1_GENERATE"``.
STEP_TYPE: Final = "hackagent.step.type"
#: The API's ``StepTypeEnum`` value the records carry (the original always sends ``OTHER``).
STEP_TRACE_TYPE: Final = "hackagent.step.trace_type"
#: Sequence number of the step's start record; set when the step starts.
STEP_SEQUENCE_START: Final = "hackagent.step.sequence.start"
#: Sequence number of the step's summary record; set when the step ends.
STEP_SEQUENCE_END: Final = "hackagent.step.sequence.end"
#: ``"completed"`` or ``"failed"``; set when the step ends.
STEP_STATUS: Final = "hackagent.step.status"
STEP_STATUS_COMPLETED: Final = "completed"
STEP_STATUS_FAILED: Final = "failed"
#: JSON: the sanitized config snapshot given to ``track_step``.
STEP_CONFIG: Final = "hackagent.step.config"
#: JSON: the sanitized input data sample given to ``track_step``.
STEP_INPUT: Final = "hackagent.step.input"
#: JSON: the context's metadata when the step started (``context_metadata`` in the record).
STEP_CONTEXT_METADATA: Final = "hackagent.step.context_metadata"
#: ``str(exception)`` of a failed step, sanitized.
STEP_ERROR_MESSAGE: Final = "hackagent.step.error_message"
#: How many metadata entries / progress entries were dropped by the step's bounds.
STEP_METADATA_DROPPED: Final = "hackagent.step.metadata.dropped"
STEP_PROGRESS_DROPPED: Final = "hackagent.step.progress.dropped"

# -- step events --------------------------------------------------------------------
EVENT_METADATA: Final = "hackagent.step.metadata"
METADATA_KEY: Final = "hackagent.metadata.key"
#: JSON: the sanitized metadata value.
METADATA_VALUE: Final = "hackagent.metadata.value"

EVENT_PROGRESS: Final = "hackagent.step.progress"
PROGRESS_MESSAGE: Final = "hackagent.progress.message"
#: JSON object: the keyword metrics given to ``record_progress``.
PROGRESS_METRICS: Final = "hackagent.progress.metrics"

# -- status updates (each its own short span) ---------------------------------------
SPAN_RUN: Final = "hackagent.run"
SPAN_RUN_STATUS: Final = "hackagent.run.status_update"
SPAN_RESULT_STATUS: Final = "hackagent.result.status_update"
RUN_STATUS: Final = "hackagent.run.status"
RESULT_EVALUATION_STATUS: Final = "hackagent.result.evaluation_status"
RESULT_EVALUATION_NOTES: Final = "hackagent.result.evaluation_notes"
#: JSON: the sanitized ``agent_specific_data`` given to ``update_result_status``.
RESULT_AGENT_SPECIFIC_DATA: Final = "hackagent.result.agent_specific_data"
#: How a run span ended: ``"status"`` (a terminal run status), ``"shutdown"``, ``"exit"``,
#: or ``"reconfigure"`` (``configure()`` called again while the run was open).
RUN_ENDED_BY: Final = "hackagent.run.ended_by"

# -- goals (the per-goal Tracker: one Result per goal) ---------------------------------
#: The goal's span is named ``goal <index>``: from ``create_goal_result`` to its verdict,
#: in the run's trace.
SPAN_GOAL: Final = "goal"
#: Zero-length spans under the goal's: its Result's creation and its verdict.
SPAN_GOAL_CREATE: Final = "hackagent.goal.create"
SPAN_GOAL_VERDICT: Final = "hackagent.goal.verdict"
#: This process's name for the goal's Result until the API gives it an id (the 201
#: answer to its creation): ``goal:<uuid4>``. Records that need the id name it.
GOAL_REF: Final = "hackagent.goal.ref"
GOAL_INDEX: Final = "hackagent.goal.index"
#: The goal's text, sanitized and capped.
GOAL_TEXT: Final = "hackagent.goal.text"
ATTACK_TYPE: Final = "hackagent.attack.type"
#: JSON: the sanitized ``initial_metadata`` of ``create_goal_result``.
GOAL_METADATA: Final = "hackagent.goal.metadata"
#: Sequence number of the goal's "Goal Setup" trace (1 unless delegated counters moved).
GOAL_SETUP_SEQUENCE: Final = "hackagent.goal.setup_sequence"
#: The verdict: True for a successful jailbreak; set on the goal span and its verdict.
GOAL_SUCCESS: Final = "hackagent.goal.success"
#: How many traces the goal had at its verdict (``total_traces`` in the record).
GOAL_TOTAL_TRACES: Final = "hackagent.goal.total_traces"

# -- goal traces (attempts, evaluations, custom traces: a zero-length span each) -----
TRACE_SEQUENCE: Final = "hackagent.trace.sequence"
TRACE_STEP_NAME: Final = "hackagent.trace.step_name"
#: The trace's ``StepTypeEnum`` value.
TRACE_STEP_TYPE: Final = "hackagent.trace.step_type"
#: JSON: the trace's content as the original sent it, sanitized and capped.
TRACE_CONTENT: Final = "hackagent.trace.content"
#: Which of the Tracker's methods made it: ``interaction``, ``evaluation`` or ``custom``.
TRACE_ORIGIN: Final = "hackagent.trace.origin"

# -- OpenTelemetry GenAI semantic conventions, set on interaction traces whose data maps
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
