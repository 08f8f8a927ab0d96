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
