"""compact_encoder(): the stdlib's compact JSON, with the encoder built once."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hackagent_otel._json import compact_encoder

_json_trees = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json_trees, st.booleans())
def test_it_writes_what_json_dumps_writes(value: Any, ensure_ascii: bool) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=ensure_ascii)

    assert compact_encoder(ensure_ascii=ensure_ascii)(value) == expected


def test_tuples_are_written_as_lists_and_non_ascii_only_when_asked() -> None:
    assert compact_encoder(ensure_ascii=False)({"é": ("a", 1)}) == '{"é":["a",1]}'
    assert compact_encoder(ensure_ascii=True)({"é": ("a", 1)}) == '{"\\u00e9":["a",1]}'


@pytest.mark.parametrize("value", [math.nan, math.inf, [-math.inf]])
def test_non_finite_floats_are_refused_as_json_dumps_refuses_them(value: Any) -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        compact_encoder(ensure_ascii=True)(value)


def test_values_json_cannot_hold_raise_type_error() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        compact_encoder(ensure_ascii=True)({"when": object()})
