"""Hypothesis strategies shared by the encoder tests."""

import itertools
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
JSON_RECORD = st.dictionaries(st.text(max_size=8), JSON_VALUE, max_size=5)
JSON_RECORDS = st.lists(JSON_RECORD, max_size=12)
CUTS = st.lists(st.integers(min_value=0), max_size=4)


def split(records: Sequence[Any], cuts: Sequence[int]) -> list[list[Any]]:
    """``records`` in consecutive batches cut at ``cuts`` (positions in any order; repeats give empty batches)."""
    bounds = [0, *sorted(c % (len(records) + 1) for c in cuts), len(records)]
    return [list(records[a:b]) for a, b in itertools.pairwise(bounds)]
