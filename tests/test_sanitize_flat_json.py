"""_sanitize._flat_json.unchanged(): a small value it vouches for is one resanitize()
keeps as it is."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hackagent_otel._sanitize import DEFAULT_LIMITS, REDACTED, Sanitizer
from hackagent_otel._sanitize._flat_json import MAX_TEXT, unchanged

#: The default policy, as a sanitizer with no extra words reads keys.
KEYS = Sanitizer().keys

#: Keys the policy reads both ways, the client key and the redaction marker among them.
_keys = st.sampled_from(
    ["model", "temperature", "api_key", "password", "client", "_client", "max_tokens", "x" * 70]
) | st.text(max_size=12)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinity: json.loads reads them from "NaN", "Infinity"
    | st.text(max_size=40)
    | st.just(REDACTED)
    | st.text(min_size=4000, max_size=4200)
)
_flat = (
    _scalars
    | st.lists(_scalars, max_size=5)
    | st.dictionaries(_keys, _scalars | st.lists(_scalars, max_size=4), max_size=6)
)
_plain_keys = st.sampled_from(["model", "items", "tags", "client_name"]) | st.text(
    "abxyz", max_size=5
)
_plain_nested = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(_plain_keys, children, max_size=3)
    ),
    max_leaves=8,
)
#: Shallow nestings (what it looks into), and deeper ones, header pairs and long lists.
_values = (
    _flat
    | _plain_nested
    | st.dictionaries(_keys, _flat, max_size=4)
    | st.lists(st.dictionaries(_keys, _flat, max_size=3), max_size=3)
    | st.recursive(
        _flat,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(_keys, children, max_size=3)
        ),
        max_leaves=12,
    )
    | st.lists(st.integers(0, 9), min_size=195, max_size=210)
)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(_values)
def test_what_it_vouches_for_resanitize_keeps_and_learns_nothing_from(value: Any) -> None:
    text = json.dumps(value)
    parsed = json.loads(text)
    sanitizer = Sanitizer()

    vouched = unchanged(parsed, len(text), sanitizer.keys)

    if vouched:
        assert sanitizer.resanitize(parsed) is parsed
        assert sanitizer.known_secrets_stats() == Sanitizer().known_secrets_stats()


def test_the_common_flat_values_are_vouched_for() -> None:
    for value in [
        {"model": "m", "api_key": REDACTED},  # a config its tracker already redacted
        {"goals": ["g1", "g2"], "batch": 1, "ratio": 0.5, "on": True, "none": None},
        {"items": 50, "errors": 0},
        {"step_metadata": {"warmup": True, "tags": ["a"]}, "rows": [{"id": 1}]},
        [1, "two", 3.0],
        150,
        True,
    ]:
        text = json.dumps(value, separators=(",", ":"))
        assert unchanged(json.loads(text), len(text), KEYS), value


@pytest.mark.parametrize(
    "value",
    [
        {"api_key": "sk-live"},  # a secret to redact (and learn)
        {"client": ["a"]},  # a client key holding more than a scalar
        {"a": {"b": {"c": {"d": 1}}}},  # deeper than it looks
        {"nested": {"api_key": REDACTED}},  # a marker below the top: the walk redacts it
        {"a": [[1, 2]]},  # arrays in arrays (header pairs, maybe)
        [["authorization", "Bearer x"]],  # header pairs
        {"n": 2**63},  # an int too wide for JSON readers
        {"f": float("nan")},
        list(range(DEFAULT_LIMITS.max_items + 1)),
        {f"k{i}": i for i in range(DEFAULT_LIMITS.max_items + 1)},
    ],
    ids=repr,
)
def test_what_sanitizing_changes_is_not_vouched_for(value: Any) -> None:
    text = json.dumps(value)
    assert not unchanged(json.loads(text), len(text), KEYS)


def test_a_text_past_the_bound_is_not_vouched_for() -> None:
    value = {"s": "x" * MAX_TEXT}
    assert not unchanged(value, MAX_TEXT + 1, KEYS)
    assert DEFAULT_LIMITS.max_string >= MAX_TEXT
