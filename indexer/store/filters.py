"""Filters: plain dicts parsed once into conditions, then built by a small per-engine factory.

Callers never import Qdrant types::

    {"source": "pubmed"}                 exact match (str, int, bool; floats match exactly too)
    {"lang": ["en", "de"]}               match any of the values
    {"year": {"gte": 2000, "lt": 2010}}  range (gt, gte, lt, lte)

Several keys are ANDed. An unknown operator or an unsupported value raises ``ValueError`` naming
the field.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RANGE_OPERATORS = ("gt", "gte", "lt", "lte")


@dataclass(frozen=True)
class Condition:
    """One parsed filter condition: ``kind`` is ``eq``, ``any`` or ``range``."""

    field: str
    kind: str
    value: Any


def _scalar(field: str, value: Any) -> str | int | bool | float:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise ValueError(
        f"filter field {field!r}: expected a string, number or boolean, got {type(value).__name__}"
    )


def parse_filter(filter: Mapping[str, Any] | None) -> list[Condition]:
    """Validate a filter dict and turn it into conditions (ANDed). Raises ``ValueError``."""
    if not filter:
        return []
    if not isinstance(filter, Mapping):
        raise ValueError(f"filter must be an object of field -> condition, got {filter!r}")
    conditions: list[Condition] = []
    for field, spec in filter.items():
        if not isinstance(field, str) or not field:
            raise ValueError(f"filter field names must be non-empty strings, got {field!r}")
        if isinstance(spec, Mapping):
            unknown = [op for op in spec if op not in RANGE_OPERATORS]
            if unknown:
                raise ValueError(
                    f"filter field {field!r}: unknown operator {unknown[0]!r} "
                    f"(use one of {', '.join(RANGE_OPERATORS)})"
                )
            if not spec:
                raise ValueError(f"filter field {field!r}: empty range")
            bounds: dict[str, float] = {}
            for op, bound in spec.items():
                if isinstance(bound, bool) or not isinstance(bound, int | float):
                    raise ValueError(f"filter field {field!r}: {op} needs a number, got {bound!r}")
                bounds[op] = float(bound)
            conditions.append(Condition(field, "range", bounds))
        elif isinstance(spec, list | tuple):
            if not spec:
                raise ValueError(f"filter field {field!r}: empty list of values")
            values = [_scalar(field, v) for v in spec]
            conditions.append(Condition(field, "any", values))
        else:
            conditions.append(Condition(field, "eq", _scalar(field, spec)))
    return conditions


class FilterFactory(ABC):
    """Builds one engine's filter objects; :func:`build_filter` decides which to build."""

    @abstractmethod
    def match(self, field: str, value: str | int | bool) -> Any: ...

    @abstractmethod
    def match_any(self, field: str, values: list[str | int]) -> Any: ...

    @abstractmethod
    def range(self, field: str, bounds: dict[str, float]) -> Any: ...

    @abstractmethod
    def all_of(self, conditions: list[Any]) -> Any: ...

    @abstractmethod
    def any_of(self, conditions: list[Any]) -> Any: ...


def build_filter(conditions: Sequence[Condition], f: FilterFactory) -> Any:
    """The engine filter of parsed ``conditions`` (None for none). Floats match as the exact
    range [v, v] (engines match keywords and integers only); a list holding floats or booleans
    becomes an OR of single conditions (``MatchAny`` takes strings or integers)."""
    if not conditions:
        return None

    def one(field: str, value: Any) -> Any:
        if isinstance(value, float):
            return f.range(field, {"gte": value, "lte": value})
        return f.match(field, value)

    must = []
    for c in conditions:
        if c.kind == "range":
            must.append(f.range(c.field, c.value))
        elif c.kind == "any":
            if any(isinstance(v, float | bool) for v in c.value):
                must.append(f.any_of([one(c.field, v) for v in c.value]))
            else:
                must.append(f.match_any(c.field, c.value))
        else:
            must.append(one(c.field, c.value))
    return f.all_of(must)
