"""On-disk copy of the last known-good config.

A restarted service can then serve before (or without) reaching Shipway.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

logger = logging.getLogger("shipway")


def load_cache(path: str) -> tuple[dict[str, Any], str | None] | None:
    """Return ``(config, etag)`` from ``path``; ``None`` if absent or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            stored = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("shipway: ignoring unreadable config cache %s: %s", path, exc)
        return None
    if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
        logger.warning(
            "shipway: ignoring config cache %s with an unexpected shape", path
        )
        return None
    etag = stored.get("etag")
    return stored["config"], etag if isinstance(etag, str) else None


def save_cache(path: str, config: dict[str, Any], etag: str | None) -> None:
    """Write the cache atomically: readers see the old file or the new, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=".shipway-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"etag": etag, "config": config}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise
