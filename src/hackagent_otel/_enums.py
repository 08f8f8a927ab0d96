"""The HackAgent API's enums, with values that match the API's strings.

The tracker accepts these, hackagent's own generated enums, or plain strings; all are
turned into the API's string value by :func:`enum_value`, which raises a clear
``ValueError`` for anything that is not a member.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar


class _ApiEnum(str, Enum):
    """A str-valued enum whose ``str()`` is its API value, like hackagent's own."""

    def __str__(self) -> str:
        return str(self.value)


class StatusEnum(_ApiEnum):
    """A run's status (``PATCH /run/{id}``)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class EvaluationStatusEnum(_ApiEnum):
    """A result's evaluation status (``PATCH /result/{id}``)."""

    NOT_EVALUATED = "NOT_EVALUATED"
    SUCCESSFUL_JAILBREAK = "SUCCESSFUL_JAILBREAK"
    FAILED_JAILBREAK = "FAILED_JAILBREAK"
    PASSED_CRITERIA = "PASSED_CRITERIA"
    FAILED_CRITERIA = "FAILED_CRITERIA"
    ERROR_TEST_FRAMEWORK = "ERROR_TEST_FRAMEWORK"
    ERROR_AGENT_RESPONSE = "ERROR_AGENT_RESPONSE"


class StepTypeEnum(_ApiEnum):
    """A trace record's step type (``POST /result/{id}/trace``)."""

    OTHER = "OTHER"
    TOOL_CALL = "TOOL_CALL"
    TOOL_RESPONSE = "TOOL_RESPONSE"
    AGENT_THOUGHT = "AGENT_THOUGHT"
    AGENT_RESPONSE_CHUNK = "AGENT_RESPONSE_CHUNK"
    MCP_STEP = "MCP_STEP"
    A2A_COMM = "A2A_COMM"


#: Run statuses after which a run takes no more steps.
TERMINAL_RUN_STATUSES = frozenset(
    {StatusEnum.COMPLETED.value, StatusEnum.FAILED.value, StatusEnum.CANCELLED.value}
)

E = TypeVar("E", bound=_ApiEnum)


def enum_value(enum_type: type[E], value: object) -> str:
    """Return the API string for ``value``: a member, a foreign enum or a string.

    Foreign enums (hackagent's generated ones) are read through their ``.value``;
    strings are matched case-insensitively. Anything else raises ``ValueError``
    naming the allowed values.
    """
    if type(value) is enum_type:
        return value.value  # type: ignore[no-any-return]  # our own member
    raw = value.value if isinstance(value, Enum) else value
    if isinstance(raw, str):
        candidate = raw.strip().upper()
        if candidate in enum_type._value2member_map_:
            return candidate
    allowed = ", ".join(member.value for member in enum_type)
    raise ValueError(f"{value!r} is not a {enum_type.__name__}; expected one of: {allowed}")
