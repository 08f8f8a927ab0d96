"""The original ``hackagent==0.5.0`` StepTracker, installed in a virtualenv of its own.

The bench never imports hackagent into the project's environment: it builds (once, in
the user's cache folder) a virtualenv with ``hackagent==0.5.0`` from PyPI and runs
``original_steps.py`` there, against the same local API server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

VERSION = "0.5.0"
SCRIPT = Path(__file__).with_name("original_steps.py")


def venv_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "hackagent-otel" / f"bench-hackagent-{VERSION}"


def original_python() -> Path:
    """The bench virtualenv's interpreter, creating and filling it if needed."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        print(f"installing hackagent=={VERSION} into {venv} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"hackagent=={VERSION}"],
            check=True,
        )
        (venv / ".installed").touch()
    return python


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
