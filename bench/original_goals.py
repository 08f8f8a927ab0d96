"""Runs under the bench virtualenv that has ``hackagent==0.5.0``: the original per-goal
tracking on :mod:`bench._goal_attack`.

Not importable from the project (it needs hackagent). Usage:
``python original_goals.py BASE_URL API_KEY ATTACKS`` prints a JSON list, one
``[seconds, of them reading ids, rows with a Result id]`` per attack, after a small
untimed warm-up attack.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

from hackagent.client import AuthenticatedClient
from hackagent.router.tracking import TrackingCoordinator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout, for bench
from bench._goal_attack import run_goal_attack


def main() -> None:
    base_url, api_key, attacks = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = AuthenticatedClient(base_url=base_url, token=api_key)
    run_goal_attack(TrackingCoordinator.create, client, str(uuid.uuid4()), goals=2, attempts=1)
    samples = [
        run_goal_attack(TrackingCoordinator.create, client, str(uuid.uuid4()))
        for _ in range(attacks)
    ]
    print(json.dumps(samples))


if __name__ == "__main__":
    main()
