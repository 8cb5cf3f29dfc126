"""JSON request bodies for the whole API (DRF views, OFREP, OTLP/JSON), parsed so that bad input
is refused at the door with a 400 instead of failing later with a 500.

Python's decoder lets through, or fails on, inputs that then break something further down:
- nesting deeper than the interpreter's recursion limit (RecursionError, not ValueError);
- numbers that overflow to infinity (`1e400`), and the `NaN` / `Infinity` constants;
- strings (values or keys) holding a lone UTF-16 surrogate (`"\\ud800"`), which no UTF-8
  encoder, response renderer or database accepts, or a NUL (`"\\u0000"`), which PostgreSQL text
  and jsonb cannot hold.
`json_loads_checked` refuses all of these with a ValueError that names the problem. The checks
cost next to nothing on ordinary bodies: strings are only walked when the raw text contains
such an escape, and nesting depth only when the text has more brackets than the limit."""
import json
import math
import re
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, get_encoding

MAX_DEPTH = 64

# An escape that may decode to a NUL or a surrogate (a valid surrogate pair also matches; the
# walk then finds nothing). Raw surrogates or NULs cannot appear: the bytes would not be UTF-8,
# and the decoder refuses unescaped control characters.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")


class InvalidJson(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJson(f"the number {text[:40]} is out of range")
    return value


def _no_constant(name: str):
    raise InvalidJson(f"{name} is not valid JSON")


def _check(data: Any, *, strings: bool, max_depth: int | None) -> None:
    stack = [(data, 1)]
    while stack:
        obj, depth = stack.pop()
        if isinstance(obj, dict):
            if max_depth is not None and depth > max_depth:
                raise InvalidJson(f"the JSON is nested more than {max_depth} levels deep")
            for key, value in obj.items():
                if strings and _BAD_CHAR.search(key):
                    raise InvalidJson("a key holds a NUL or an unpaired UTF-16 surrogate")
                stack.append((value, depth + 1))
        elif isinstance(obj, list):
            if max_depth is not None and depth > max_depth:
                raise InvalidJson(f"the JSON is nested more than {max_depth} levels deep")
            stack.extend((value, depth + 1) for value in obj)
        elif strings and isinstance(obj, str) and _BAD_CHAR.search(obj):
            raise InvalidJson("a string holds a NUL or an unpaired UTF-16 surrogate")


def json_loads_checked(raw: bytes | str, *, max_depth: int | None = MAX_DEPTH) -> Any:
    """json.loads that raises ValueError (InvalidJson or the decoder's own) for every input the
    module docstring lists. `max_depth=None` skips the depth limit (for bodies whose nested
    values are never stored or echoed; recursion in the decoder itself is still refused)."""
    text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    try:
        data = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidJson("the JSON is nested too deeply") from None
    strings = _SUSPECT_ESCAPE.search(text) is not None
    deep = max_depth is not None and text.count("[") + text.count("{") > max_depth
    if strings or deep:
        _check(data, strings=strings, max_depth=max_depth if deep else None)
    return data


class CheckedJSONParser(JSONParser):
    """DRF's JSONParser with `json_loads_checked`'s rules (the API's default parser)."""

    max_depth: int | None = MAX_DEPTH

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        encoding = get_encoding(parser_context or {})  # refuses unknown and non-text charsets (ParseError)
        try:
            return json_loads_checked(raw.decode(encoding), max_depth=self.max_depth)
        except ValueError as exc:  # UnicodeDecodeError and the decoder's errors are ValueErrors too
            raise ParseError(f"JSON parse error - {exc}") from None


class BatchJSONParser(CheckedJSONParser):
    """For telemetry batches (events, metric values): every field is type-checked one by one and
    nested values are never stored, so no depth walk over a 1000-event batch."""

    max_depth = None
