"""Prompt templates: ``{{ name }}`` placeholders, validation and one-pass rendering.

The rules (DESIGN.md, "Templates"): single braces are literal so JSON in a prompt just
works; a ``{{`` that opens no valid placeholder is refused when a version is saved;
rendering is one pass, so a substituted value is never rendered again; every missing
variable is reported at once; extra variables are ignored and listed. In a run of two or
more ``{``, a placeholder may start at the last two braces and the braces before it are
literal (``{{{x}}}`` renders as ``{`` + value + ``}``); ``}}`` outside a placeholder is
literal.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_PLACEHOLDER = re.compile(r"\{\{ *([A-Za-z_][A-Za-z0-9_]*) *\}\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# How much of a broken placeholder is quoted back in an error message.
_SNIPPET_LIMIT = 40


@dataclass(frozen=True)
class TemplateError:
    """One problem in a template.

    ``position`` is a 0-based character offset; ``line`` and ``column`` are 1-based;
    ``message_index`` says which chat message it is in, for chat templates.
    """

    position: int
    line: int
    column: int
    message: str
    message_index: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}"
        if self.message_index is not None:
            where = f"message {self.message_index}, {where}"
        return f"{where}: {self.message}"


class TemplateSyntaxError(ValueError):
    """The template cannot be saved; ``errors`` lists every problem, all of them."""

    def __init__(self, errors: Sequence[TemplateError]) -> None:
        self.errors: list[TemplateError] = list(errors)
        super().__init__("invalid template: " + "; ".join(str(e) for e in self.errors))


class TemplateRenderError(ValueError):
    """Rendering a valid template failed."""


class MissingVariables(TemplateRenderError):
    """Variables the template needs were not given; ``missing`` names every one."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing: list[str] = list(missing)
        names = ", ".join(self.missing)
        super().__init__(f"missing template variable(s): {names}")


@dataclass(frozen=True)
class RenderResult:
    """A rendered text template, the variables it used and the given ones ignored."""

    text: str
    used: list[str]
    extra: list[str]


@dataclass(frozen=True)
class RenderedMessages:
    """Rendered chat messages with the variables used and the given ones ignored."""

    messages: list[dict]
    used: list[str]
    extra: list[str]


@dataclass(frozen=True)
class _Placeholder:
    name: str


_Part = str | _Placeholder


def _error_at(
    text: str, position: int, message: str, index: int | None
) -> TemplateError:
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return TemplateError(position, line, column, message, index)


def _describe_invalid(text: str, start: int) -> str:
    """Why the ``{{`` at ``start`` is not a placeholder, quoting it when short."""
    body_start = start + 2
    close = text.find("}}", body_start)
    reopen = text.find("{{", body_start)
    if (
        close == -1
        or (reopen != -1 and reopen < close)
        or "\n" in text[body_start:close]
    ):
        return "'{{' is not closed by '}}' (write single braces for literal text)"
    inner = text[body_start:close].strip()
    snippet = text[start : close + 2]
    if len(snippet) > _SNIPPET_LIMIT:
        snippet = snippet[: _SNIPPET_LIMIT - 3] + "..."
    if not inner:
        return f"empty placeholder {snippet!r}"
    if not _NAME.fullmatch(inner):
        return (
            f"{snippet!r} is not a valid placeholder: a variable name starts with a "
            "letter or underscore and has only letters, digits and underscores"
        )
    return f"{snippet!r} is not a valid placeholder: only spaces may surround the name"


def _parse(
    text: str, index: int | None = None
) -> tuple[list[_Part], list[TemplateError]]:
    if not isinstance(text, str):
        raise TypeError(f"template must be a string, not {type(text).__name__}")
    parts: list[_Part] = []
    errors: list[TemplateError] = []
    pos = 0
    literal_start = 0
    while True:
        run_start = text.find("{{", pos)
        if run_start == -1:
            break
        run_end = run_start
        while run_end < len(text) and text[run_end] == "{":
            run_end += 1
        match = _PLACEHOLDER.match(text, run_end - 2)
        if match is None:
            errors.append(
                _error_at(text, run_start, _describe_invalid(text, run_end - 2), index)
            )
            pos = run_end
            continue
        if match.start() > literal_start:
            parts.append(text[literal_start : match.start()])
        parts.append(_Placeholder(match.group(1)))
        pos = literal_start = match.end()
    if literal_start < len(text):
        parts.append(text[literal_start:])
    return parts, errors


def _unique_names(parts: Iterable[_Part]) -> list[str]:
    return list(dict.fromkeys(p.name for p in parts if isinstance(p, _Placeholder)))


def template_variables(text: str) -> list[str]:
    """Variable names in ``text``, unique, in order of first appearance."""
    parts, errors = _parse(text)
    if errors:
        raise TemplateSyntaxError(errors)
    return _unique_names(parts)


def validate_template(text: str) -> list[str]:
    """Refuse an invalid template (listing every error), else return its variables."""
    return template_variables(text)


def _substitute(parts: Iterable[_Part], variables: Mapping[str, object]) -> str:
    # Values are joined, never re-scanned: that is what makes rendering one pass.
    return "".join(
        str(variables[p.name]) if isinstance(p, _Placeholder) else p for p in parts
    )


def _check_missing(names: list[str], variables: Mapping[str, object]) -> None:
    missing = [name for name in names if name not in variables]
    if missing:
        raise MissingVariables(missing)


def render(text: str, variables: Mapping[str, object]) -> RenderResult:
    """Render ``text`` with ``variables`` (values go through ``str()``) in one pass."""
    parts, errors = _parse(text)
    if errors:
        raise TemplateSyntaxError(errors)
    used = _unique_names(parts)
    _check_missing(used, variables)
    extra = sorted(set(variables) - set(used))
    return RenderResult(_substitute(parts, variables), used, extra)


def _parse_messages(messages: Sequence[Mapping]) -> list[list[_Part]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(
            "messages must be a list of {'role': ..., 'content': ...} objects"
        )
    parsed: list[list[_Part]] = []
    errors: list[TemplateError] = []
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            errors.append(
                TemplateError(0, 1, 1, "a message needs a string 'role'", index)
            )
        if not isinstance(content, str):
            errors.append(
                TemplateError(0, 1, 1, "a message needs a string 'content'", index)
            )
            parsed.append([])
            continue
        parts, message_errors = _parse(content, index)
        parsed.append(parts)
        errors.extend(message_errors)
    if errors:
        raise TemplateSyntaxError(errors)
    return parsed


def messages_variables(messages: Sequence[Mapping]) -> list[str]:
    """Variable names across chat messages, unique, in order of first appearance."""
    return _unique_names(part for parts in _parse_messages(messages) for part in parts)


def render_messages(
    messages: Sequence[Mapping], variables: Mapping[str, object]
) -> RenderedMessages:
    """Render every message's content in one pass.

    Missing variables across all messages are reported together. Other message fields
    are copied unchanged; the input is not modified.
    """
    parsed = _parse_messages(messages)
    used = _unique_names(part for parts in parsed for part in parts)
    _check_missing(used, variables)
    rendered = []
    for message, parts in zip(messages, parsed, strict=True):
        out = copy.deepcopy(dict(message))
        out["content"] = _substitute(parts, variables)
        rendered.append(out)
    extra = sorted(set(variables) - set(used))
    return RenderedMessages(rendered, used, extra)
