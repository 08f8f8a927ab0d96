"""Values the tier's attack hands its tracking, shared by the attack script (run in the
tier's virtualenv) and the tests that judge what reached the API (which cannot import
the script: it needs hackagent)."""

from __future__ import annotations

#: Secrets: under keys both trackers redact (an API key in a config and in a request),
#: and under keys only ours redacts (the original sent interaction metadata, custom
#: trace content and goal metadata as they were).
TARGET_API_KEY = "sk-tier-target-0000"
SESSION_TOKEN = "tier-session-token-1111"
JUDGE_KEY = "sk-tier-judge-2222"
#: A step's ``max_new_tokens``: a length, no secret.
MAX_NEW_TOKENS = 64
