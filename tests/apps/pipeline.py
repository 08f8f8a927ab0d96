"""A pipeline process for the end-to-end tests: ``python pipeline.py MODE RUN_ID RESULT_ID``.

The fake API's address comes from ``APP_API_URL`` / ``APP_API_KEY`` (never from the
``HACKAGENT_*`` variables, unless the test sets those on purpose). Modes:

* ``implicit``: never calls ``configure()``; the context carries an
  AuthenticatedClient-like client; the process exits normally.
* ``spool``: ``configure()`` against the API (down), runs the scenario, waits for
  ``force_flush()``, prints ``flushed`` and sleeps until killed.
* ``configured``: ``configure()`` against the API, runs the scenario, exits normally.
* ``fork``: ``configure()``; the parent runs the scenario on RESULT_ID and forks while
  its records are still queued; the child runs it on a result id of its own (printed),
  then both exit normally.
* ``env-exporter``: the SDK's own env-var configuration (``OTEL_TRACES_EXPORTER``)
  installs the exporter; no ``configure()``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for apps.scenario

import hackagent_otel
from apps.scenario import AuthenticatedClientLike, run_seed_scenario
from hackagent_otel import StepTracker, TrackingContext


def main(mode: str, run_id: str, result_id: str) -> int:
    api_url = os.environ.get("APP_API_URL", "")
    api_key = os.environ.get("APP_API_KEY", "")
    if mode == "implicit":
        client = AuthenticatedClientLike(api_url, api_key)
        run_seed_scenario(StepTracker(TrackingContext(client, run_id, result_id)))
        return 0
    if mode == "env-exporter":
        from opentelemetry.sdk._configuration import _initialize_components

        _initialize_components()
        context = TrackingContext(run_id=run_id, parent_result_id=result_id)
        run_seed_scenario(StepTracker(context))
        return 0
    hackagent_otel.configure(hackagent_base_url=api_url, hackagent_api_key=api_key)
    tracker = StepTracker(TrackingContext(run_id=run_id, parent_result_id=result_id))
    if mode == "configured":
        run_seed_scenario(tracker)
        print("done", flush=True)
        time.sleep(float(os.environ.get("APP_LINGER", "0")))
        return 0
    if mode == "spool":
        run_seed_scenario(tracker)
        flushed = hackagent_otel.force_flush(30_000)
        print("flushed" if flushed else "not flushed", flush=True)
        while True:
            time.sleep(60)
    if mode == "fork":
        run_seed_scenario(tracker)
        pid = os.fork()
        if pid == 0:
            child_result = str(uuid.uuid4())
            print(json.dumps({"child_result": child_result}), flush=True)
            run_seed_scenario(
                StepTracker(TrackingContext(run_id=run_id, parent_result_id=child_result))
            )
            return 0
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
