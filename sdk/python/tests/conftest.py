"""Shared test helpers: locating the cross-implementation contract files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

CONTRACT = "bucketing.json"


def find_contracts_dir(start: Path) -> Path | None:
    """``SHIPWAY_CONTRACTS_DIR``, else the nearest ``shared/contracts`` in an ancestor
    of ``start`` or beside one (CI clones the repo with a ``shared/`` copy next to it).
    """
    env = os.environ.get("SHIPWAY_CONTRACTS_DIR")
    if env:
        return Path(env) if (Path(env) / CONTRACT).is_file() else None
    for directory in [start, *start.parents]:
        for candidate in (
            directory / "shared" / "contracts",
            directory.parent / "shared" / "contracts",
        ):
            if (candidate / CONTRACT).is_file():
                return candidate
    # Inside the Shipway repository the server's tests keep a vendored copy.
    parents = start.parents
    vendored = parents[2] / "tests" / "contracts" if len(parents) > 2 else None
    if vendored is not None and (vendored / CONTRACT).is_file():
        return vendored
    return None


@pytest.fixture(scope="session")
def bucketing_contract() -> dict[str, Any]:
    directory = find_contracts_dir(Path(__file__).resolve().parent)
    if directory is None:
        pytest.skip(
            "bucketing contract not found: set SHIPWAY_CONTRACTS_DIR or place "
            "shared/contracts/"
            "bucketing.json above or beside the checkout"
        )
    return json.loads((directory / CONTRACT).read_text(encoding="utf-8"))
