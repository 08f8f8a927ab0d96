"""The seed's example pipeline and the HackAgent calls the original tracker makes for it.

Shared by the in-process tests and the subprocess apps in this folder (both import
``apps.scenario``), so both run exactly the same steps and expect exactly the same calls.
"""

from __future__ import annotations

from typing import Any

from hackagent_otel import EvaluationStatusEnum, StatusEnum, StepTracker

#: A secret that must never reach the API (it sits under an ``api_key`` config key).
CANARY = "CANARY-end-to-end-7f3a"

Call = tuple[str, str, dict[str, Any]]


class AuthenticatedClientLike:
    """What hackagent's ``AuthenticatedClient`` exposes, without attrs or hackagent."""

    def __init__(self, base_url: str, token: str) -> None:
        self._base_url = base_url
        self.token = token
        self.prefix = "Bearer"
        self.auth_header_name = "Authorization"


def run_seed_scenario(tracker: StepTracker) -> None:
    """Steps with config, input, metadata and progress; a failing step; status updates."""
    tracker.update_run_status(StatusEnum.RUNNING)
    tracker.add_step_metadata("warmup", True)
    with tracker.track_step(
        "Generate Prefixes",
        "STEP1_GENERATE",
        input_data={"goals": ["g1"]},
        config={"model": "m", "api_key": CANARY},
    ):
        tracker.add_step_metadata("prefixes_generated", 150)
        tracker.record_progress("Processing batch 1/10", items=50, errors=0)
    try:
        with tracker.track_step("Evaluate", "STEP2_EVALUATE"):
            raise RuntimeError("judge down")
    except RuntimeError:
        pass
    tracker.update_result_status(EvaluationStatusEnum.PASSED_CRITERIA, "done", {"score": 1})
    tracker.update_run_status(StatusEnum.COMPLETED)


def expected_result_calls(result_id: str) -> list[Call]:
    """The calls on ``/result/{result_id}...`` in the order the original makes them."""
    trace_path = f"/result/{result_id}/trace"
    result_path = f"/result/{result_id}"
    return [
        (
            "POST",
            trace_path,
            {
                "sequence": 1,
                "step_type": "OTHER",
                "content": {
                    "step_name": "Generate Prefixes",
                    "step_type_identifier": "STEP1_GENERATE",
                    "config_snapshot": {"model": "m", "api_key": "***REDACTED***"},
                    "input_data_sample": {"goals": ["g1"]},
                    "context_metadata": {"step_metadata": {"warmup": True}},
                },
            },
        ),
        (
            "POST",
            trace_path,
            {
                "sequence": 2,
                "step_type": "OTHER",
                "content": {
                    "step_name": "Generate Prefixes (Summary)",
                    "step_type_identifier": "STEP1_GENERATE",
                    "status": "completed",
                    "step_metadata": {"warmup": True, "prefixes_generated": 150},
                    "progress_log": [
                        {"message": "Processing batch 1/10", "items": 50, "errors": 0}
                    ],
                },
            },
        ),
        (
            "POST",
            trace_path,
            {
                "sequence": 3,
                "step_type": "OTHER",
                "content": {"step_name": "Evaluate", "step_type_identifier": "STEP2_EVALUATE"},
            },
        ),
        (
            "PATCH",
            result_path,
            {
                "evaluation_status": "ERROR_TEST_FRAMEWORK",
                "evaluation_notes": "Pipeline failed at 'Evaluate': judge down",
            },
        ),
        (
            "POST",
            trace_path,
            {
                "sequence": 4,
                "step_type": "OTHER",
                "content": {
                    "step_name": "Evaluate (Summary)",
                    "step_type_identifier": "STEP2_EVALUATE",
                    "status": "failed",
                    "error_message": "judge down",
                },
            },
        ),
        (
            "PATCH",
            result_path,
            {
                "evaluation_status": "PASSED_CRITERIA",
                "evaluation_notes": "done",
                "agent_specific_data": {"score": 1},
            },
        ),
    ]


def expected_run_calls(run_id: str) -> list[Call]:
    """The calls on ``/run/{run_id}``, in order."""
    return [
        ("PATCH", f"/run/{run_id}", {"status": "RUNNING"}),
        ("PATCH", f"/run/{run_id}", {"status": "COMPLETED"}),
    ]


#: Records the scenario makes: 6 on the result, 2 on the run.
SCENARIO_RECORDS = 8


def without_otel(body: Any) -> Any:
    """A record body without the ``content.otel`` object the original did not send."""
    if isinstance(body, dict) and isinstance(body.get("content"), dict):
        return {**body, "content": {k: v for k, v in body["content"].items() if k != "otel"}}
    return body
