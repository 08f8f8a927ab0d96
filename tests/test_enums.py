"""The API's enums and enum_value(): members, foreign enums and strings."""

from __future__ import annotations

from enum import Enum
from typing import Any

import pytest

from hackagent_otel import EvaluationStatusEnum, StatusEnum, StepTypeEnum
from hackagent_otel._enums import TERMINAL_RUN_STATUSES, enum_value


def test_values_are_the_api_strings() -> None:
    assert [m.value for m in StatusEnum] == [
        "PENDING",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
    ]
    assert [m.value for m in EvaluationStatusEnum] == [
        "NOT_EVALUATED",
        "SUCCESSFUL_JAILBREAK",
        "FAILED_JAILBREAK",
        "PASSED_CRITERIA",
        "FAILED_CRITERIA",
        "ERROR_TEST_FRAMEWORK",
        "ERROR_AGENT_RESPONSE",
    ]
    assert [m.value for m in StepTypeEnum] == [
        "OTHER",
        "TOOL_CALL",
        "TOOL_RESPONSE",
        "AGENT_THOUGHT",
        "AGENT_RESPONSE_CHUNK",
        "MCP_STEP",
        "A2A_COMM",
    ]


def test_members_are_strings_that_print_as_their_value() -> None:
    assert str(StatusEnum.COMPLETED) == "COMPLETED"
    assert f"{EvaluationStatusEnum.PASSED_CRITERIA}" == "PASSED_CRITERIA"
    assert StatusEnum.RUNNING == "RUNNING"


def test_terminal_run_statuses() -> None:
    assert frozenset({"COMPLETED", "FAILED", "CANCELLED"}) == TERMINAL_RUN_STATUSES


class HackagentStatus(Enum):
    """Shaped like hackagent's generated StatusEnum (not a str subclass)."""

    COMPLETED = "COMPLETED"
    PAUSED = "PAUSED"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (StatusEnum.FAILED, "FAILED"),
        (HackagentStatus.COMPLETED, "COMPLETED"),
        ("CANCELLED", "CANCELLED"),
        ("cancelled", "CANCELLED"),
        ("  running\n", "RUNNING"),
    ],
)
def test_enum_value_accepts_members_foreign_enums_and_strings(value: Any, expected: str) -> None:
    assert enum_value(StatusEnum, value) == expected


@pytest.mark.parametrize(
    "value", ["DONE", "", None, 1, HackagentStatus.PAUSED, EvaluationStatusEnum.NOT_EVALUATED]
)
def test_enum_value_rejects_anything_else_naming_the_allowed_values(value: Any) -> None:
    with pytest.raises(ValueError, match="is not a StatusEnum") as raised:
        enum_value(StatusEnum, value)

    assert "PENDING, RUNNING, COMPLETED, FAILED, CANCELLED" in str(raised.value)
