"""Reads for features and prompt versions."""
import difflib
import json

from apps.core.errors import NotFound
from apps.prompts.models import Feature, PromptVersion


def feature_get(*, key: str) -> Feature:
    try:
        return Feature.objects.select_related("owner").get(key=key)
    except Feature.DoesNotExist:
        raise NotFound(f"Unknown feature '{key}'", code="feature_not_found") from None


def prompt_version_get(*, feature: Feature, version: str) -> PromptVersion:
    try:
        return PromptVersion.objects.get(feature=feature, version=version)
    except PromptVersion.DoesNotExist:
        raise NotFound(f"{feature.key} has no version '{version}'", code="version_not_found") from None


def prompt_version_list(*, feature: Feature):
    return PromptVersion.objects.filter(feature=feature).select_related("author")


def _as_lines(pv: PromptVersion) -> list[str]:
    lines = [f"model: {pv.model}", f"params: {json.dumps(pv.params, sort_keys=True)}",
             f"fallback_models: {', '.join(pv.fallback_models) or '-'}", ""]
    if pv.messages is not None:
        for m in pv.messages:
            lines.append(f"[{m['role']}]")
            lines.extend(m["content"].splitlines())
            lines.append("")
    else:
        lines.extend((pv.template or "").splitlines())
    return lines


def prompt_version_diff(*, old: PromptVersion, new: PromptVersion) -> list[tuple[str, str]]:
    """A unified diff of two versions as (kind, line) pairs; kind is add, del, ctx or hunk."""
    out: list[tuple[str, str]] = []
    for line in difflib.unified_diff(
        _as_lines(old), _as_lines(new), fromfile=old.version, tofile=new.version, lineterm="", n=3
    ):
        if line.startswith(("---", "+++")):
            continue
        kind = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "ctx")
        out.append((kind, line))
    return out
