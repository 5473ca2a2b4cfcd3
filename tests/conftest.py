"""Shared fixtures: every test isolated from the caller's environment (no RAR_* setting, no DAGSTER_HOME,
the Hugging Face hub offline), an isolated RAR_HOME per test and the third-party datasets of ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rar_pipeline.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAR_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
# RAR_* variables of the test harness itself, not pipeline settings: kept.
HARNESS_VARIABLES = {"RAR_TEST_DATA"}


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch):
    """Every test starts from the defaults, whatever the caller exported: no RAR_* setting (a test sets
    what it needs), no DAGSTER_HOME (runs go to an ephemeral or test instance), no hub downloads.
    ``rar materialize`` run in-process sets DAGSTER_HOME itself; it is restored after the test too."""
    for name in [n for n in os.environ if n.startswith("RAR_") and n not in HARNESS_VARIABLES]:
        monkeypatch.delenv(name)
    dagster_home = os.environ.pop("DAGSTER_HOME", None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
    os.environ.pop("DAGSTER_HOME", None)
    if dagster_home is not None:
        os.environ["DAGSTER_HOME"] = dagster_home


@pytest.fixture
def rar_home(tmp_path, monkeypatch) -> Path:
    """A fresh RAR_HOME for one test; settings re-read from the environment."""
    home = tmp_path / "rar_home"
    monkeypatch.setenv("RAR_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API server (moto in server mode) on 127.0.0.1, for the whole session."""
    pytest.importorskip("moto", reason="the S3 tests need moto[server] (dev extra)")
    pytest.importorskip("s3fs", reason="object-store homes need s3fs (deploy extra)")
    from s3_server import S3Server

    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> dict[str, str]:
    """The standard AWS variables pointing at the test S3 server, set for this test."""
    from s3_server import clear_fsspec_cache

    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    clear_fsspec_cache()
    return s3_server.env


@pytest.fixture
def s3_home(s3_server, s3_env, monkeypatch) -> str:
    """RAR_HOME=s3://<fresh bucket>/home on the test S3 server; settings re-read from env."""
    home = f"s3://{s3_server.new_bucket()}/home"
    monkeypatch.setenv("RAR_HOME", home)
    monkeypatch.delenv("RAR_SOURCE_MIRROR", raising=False)
    monkeypatch.delenv("RAR_PROFILE", raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A one-layer sentence-transformers encoder folder (tests/tiny_encoder.py): embeds a corpus in seconds."""
    from tiny_encoder import build_tiny_encoder

    return build_tiny_encoder(tmp_path_factory.mktemp("encoder"))


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
