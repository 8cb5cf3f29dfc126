"""Turning a feature evaluation into a ready-to-send prompt (text or chat messages)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .evaluation import Evaluation
from .templating import render, render_messages


@dataclass(frozen=True)
class PreparedPrompt:
    """What to send to the model for one call.

    When nothing is served (feature disabled, targeted ``off``, unknown, not ready)
    every prompt field is empty and ``served`` is false: the caller falls back to its
    code default.
    """

    evaluation: Evaluation
    messages: list[dict] | None = None
    text: str | None = None
    model: str | None = None
    params: dict = field(default_factory=dict)
    fallback_models: list[str] = field(default_factory=list)
    prompt_version: str | None = None
    arm: str | None = None
    used: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def served(self) -> bool:
        return self.evaluation.value is not None


def prepare_prompt(
    evaluation: Evaluation, variables: Mapping[str, object]
) -> PreparedPrompt:
    """Render the served arm's template or messages with ``variables``.

    Raises ``MissingVariables`` naming every variable the served version needs but was
    not given, and ``TemplateSyntaxError`` if the served template is invalid.
    """
    value: Any = evaluation.value
    if not isinstance(value, Mapping):
        return PreparedPrompt(evaluation)
    messages: list[dict] | None = None
    text: str | None = None
    used: list[str] = []
    extra: list[str] = []
    if value.get("messages") is not None:
        rendered = render_messages(value["messages"], variables)
        messages, used, extra = rendered.messages, rendered.used, rendered.extra
    elif value.get("template") is not None:
        result = render(value["template"], variables)
        text, used, extra = result.text, result.used, result.extra
    return PreparedPrompt(
        evaluation=evaluation,
        messages=messages,
        text=text,
        model=value.get("model"),
        params=dict(value.get("params") or {}),
        fallback_models=list(value.get("fallback_models") or []),
        prompt_version=value.get("prompt_version"),
        arm=value.get("arm"),
        used=used,
        extra=extra,
    )
