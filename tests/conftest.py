"""Shared fixtures: an isolated RAR_HOME per test and the third-party datasets of ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rar_pipeline.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAR_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def rar_home(tmp_path, monkeypatch) -> Path:
    """A fresh RAR_HOME (and DAGSTER_HOME-free env) for one test; settings re-read from env."""
    home = tmp_path / "rar_home"
    monkeypatch.setenv("RAR_HOME", str(home))
    monkeypatch.delenv("RAR_SOURCE_MIRROR", raising=False)
    monkeypatch.delenv("RAR_PROFILE", raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (third-party datasets, never committed); skip the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"third-party datasets not found at {SHARED_DATA} (set RAR_TEST_DATA)")
    return SHARED_DATA


@pytest.fixture
def mirror_home(rar_home, shared_data, monkeypatch) -> Path:
    """RAR_HOME plus RAR_SOURCE_MIRROR=../shared/data (the full profile served offline)."""
    monkeypatch.setenv("RAR_SOURCE_MIRROR", str(shared_data))
    monkeypatch.setenv("RAR_PROFILE", "full")
    get_settings.cache_clear()
    return rar_home
