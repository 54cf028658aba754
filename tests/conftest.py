"""Shared fixtures: one nlptool cache for the whole session, so the builtin corpus, trained
tokenizers and tokenized data are built once and reused by every test and CLI subprocess."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def nlptool_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("nlptool-cache")
    previous = os.environ.get("NLPTOOL_CACHE")
    os.environ["NLPTOOL_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("NLPTOOL_CACHE", None)
    else:
        os.environ["NLPTOOL_CACHE"] = previous
