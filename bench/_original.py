"""The original ``hackagent==0.5.0`` StepTracker, installed in a virtualenv of its own.

The bench never imports hackagent into the project's environment: it builds (once, in
the user's cache folder) a virtualenv with ``hackagent==0.5.0`` from PyPI and runs
``original_steps.py`` there, against the same local API server.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench._venv import HACKAGENT_VERSION, bench_python

VERSION = HACKAGENT_VERSION
SCRIPT = Path(__file__).with_name("original_steps.py")


def original_python() -> Path:
    """The bench virtualenv's interpreter, creating and filling it if needed."""
    return bench_python()


def original_step_samples(base_url: str, api_key: str, steps: int) -> list[float]:
    """Per-step microseconds of the original tracker against ``base_url``."""
    result = subprocess.run(
        [str(original_python()), str(SCRIPT), base_url, api_key, str(steps)],
        check=True,
        capture_output=True,
        text=True,
    )
    samples: list[float] = json.loads(result.stdout)
    return samples
