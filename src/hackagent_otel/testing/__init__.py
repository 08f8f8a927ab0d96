"""Test helpers for code that uses hackagent-otel, usable in your own test suites.

:class:`FakeHackAgentAPI` is a local HTTP server of the HackAgent API calls a step
tracker makes, with recorded calls and programmable faults. It is never used by the
runtime path of the library.
"""

from hackagent_otel.testing._fake_api import (
    EVALUATION_STATUS_VALUES,
    RUN_STATUS_VALUES,
    STEP_TYPE_VALUES,
    FakeHackAgentAPI,
    Fault,
    ReceivedCall,
)

__all__ = [
    "EVALUATION_STATUS_VALUES",
    "RUN_STATUS_VALUES",
    "STEP_TYPE_VALUES",
    "FakeHackAgentAPI",
    "Fault",
    "ReceivedCall",
]
