"""The field types and validators the request models share: strict integers, valid unicode,
visible text, payload filter conditions."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

# names the store accepts (indexer.store.check_name); also keeps odd strings away from disk paths
COLLECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"


def _integral(value: Any) -> Any:
    """JSON Schema counts 1.0 as an integer: accept it (strict mode would not)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # Qdrant payload integers


def lone_surrogate(value: Any, where: str = "") -> str | None:
    """Where in ``value`` (a JSON value) a string holds a lone surrogate (JSON allows
    ``"\ud800"``, but it is no unicode text: tokenizers, Qdrant and UTF-8 refuse it), or None.
    Returns ``where`` extended by the keys/indices leading to it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        inner = f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and lone_surrogate(key) is not None:
            return inner
        found = lone_surrogate(item, inner)
        if found is not None:
            return found
    return None


def _valid_unicode(value: Any) -> Any:
    """Refuse strings (anywhere in a JSON value) with a lone surrogate: 422, not a 500."""
    found = lone_surrogate(value)
    if found is not None:
        # the path may hold the surrogate itself (a key): written escaped
        at = f" (at {found.encode('utf-8', 'backslashreplace').decode()})" if found else ""
        raise ValueError(f"text is not valid unicode: a lone surrogate{at}")
    return value


# The characters a text may hold and still say nothing: whitespace, controls (Cc) and format
# characters (Cf: zero-width marks, bidi controls, the BOM), as code point ranges of this
# Python's unicode database (tests/search_api/test_request_errors.py recomputes them). A
# tokenizer turns such a text into special tokens alone (BERT's cleaning drops Cc/Cf).
INVISIBLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x0020), (0x007F, 0x00A0), (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C),
    (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x1680, 0x1680),
    (0x180E, 0x180E), (0x2000, 0x200F), (0x2028, 0x202F), (0x205F, 0x2064), (0x2066, 0x206F),
    (0x3000, 0x3000), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD),
    (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)  # fmt: skip


def _class_char(cp: int) -> str:
    # \uXXXX where JSON Schema (ECMA-262) and Python's re both read it; the character itself
    # beyond the BMP (re reads it; ECMA-262 needs the u flag for it)
    return f"\\u{cp:04x}" if cp <= 0xFFFF else chr(cp)


# a text that holds at least one visible character (the schema's pattern: search semantics)
VISIBLE_PATTERN = "[^" + "".join(
    _class_char(a) if a == b else f"{_class_char(a)}-{_class_char(b)}" for a, b in INVISIBLE_RANGES
) + "]"  # fmt: skip
_VISIBLE = re.compile(VISIBLE_PATTERN)


def _visible(value: str) -> str:
    """Refuse text with nothing to embed (no character outside :data:`INVISIBLE_RANGES`: only
    whitespace, controls such as NUL, zero-width marks); the schema states the same rule as
    :data:`VISIBLE_PATTERN`, so a request the schema accepts is not refused for it."""
    if _VISIBLE.search(value) is None:
        raise ValueError(
            "text has no visible characters (only whitespace or control characters such as NUL)"
        )
    return value


def _filter_condition(value: Any) -> Any:
    """A filter value Qdrant can hold (integers in 64 bits, valid unicode), checked before the
    union of condition kinds: else an integer beyond int64 would pass as a float."""
    for n, item in enumerate(value if isinstance(value, list) else [value]):
        at = f" (at {n})" if isinstance(value, list) else ""
        whole = isinstance(item, int) and not isinstance(item, bool)
        if whole and not INT64_MIN <= item <= INT64_MAX:
            raise ValueError(
                f"integer out of range{at}: filter integers must fit in 64 bits ({INT64_MIN} .. "
                f"{INT64_MAX})"
            )
        if isinstance(item, str) and lone_surrogate(item) is not None:
            raise ValueError(f"text is not valid unicode{at}: a lone surrogate")
    return value


# Request models are strict: no "10" for 10, no false for 0 (the spec says what is accepted).
# Constraints go before the validator, so the schema keeps minimum/maximum.
AcceptIntegralFloat = BeforeValidator(_integral)
ValidUnicode = AfterValidator(_valid_unicode)
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
Text = Annotated[str, ValidUnicode]
Scalar = str | Int64 | FiniteFloat | bool  # bool before int would not matter: pydantic smart mode
# what the schema says of a text to embed; NonBlank also refuses what has no visible character
TextInput = Annotated[str, Field(min_length=1, json_schema_extra={"pattern": VISIBLE_PATTERN})]
NonBlank = Annotated[TextInput, ValidUnicode, AfterValidator(_visible)]
# payload field paths Qdrant accepts: dot-separated names (``meta.lang`` for nested fields)
FieldName = Annotated[
    str, StringConstraints(max_length=200, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
]


def _bounds_schema(schema: dict[str, Any]) -> None:
    """What :class:`Range` accepts: at least one bound, each a number (a bound left out is
    absent, not null)."""
    schema["minProperties"] = 1
    for bound in schema["properties"].values():
        bound.pop("anyOf", None)
        bound.pop("default", None)
        bound["type"] = "number"


class Range(BaseModel):
    """Numeric range condition; at least one bound."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_bounds_schema)

    gt: FiniteFloat | None = None
    gte: FiniteFloat | None = None
    lt: FiniteFloat | None = None
    lte: FiniteFloat | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_null_bound(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = [k for k in cls.model_fields if k in data and data[k] is None]
            if nulls:
                raise ValueError(f"range bound {nulls[0]} is null: leave it out")
        return data

    @model_validator(mode="after")
    def _one_bound(self) -> Range:
        if all(v is None for v in (self.gt, self.gte, self.lt, self.lte)):
            raise ValueError("a range needs at least one of gt, gte, lt, lte")
        return self


FilterCondition = Annotated[
    Scalar | Annotated[list[Scalar], Field(min_length=1)] | Range,
    BeforeValidator(_filter_condition),
]


def _field_names_schema(schema: dict[str, Any]) -> None:
    """pydantic writes key constraints as ``patternProperties`` (other keys stay allowed); say
    what is validated instead: every key matches (``propertyNames``), every value is a
    condition (``additionalProperties``)."""
    for member in schema.get("anyOf", []):
        patterns = member.pop("patternProperties", None)
        if patterns:
            (pattern, value), *_ = patterns.items()
            names = member.setdefault("propertyNames", {})
            names["pattern"] = pattern
            member["additionalProperties"] = value
