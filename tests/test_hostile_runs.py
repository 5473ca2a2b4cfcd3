"""Runs under faults, with real processes: two vector syncs on one LanceDB table at once, a ``rar
materialize`` killed with SIGKILL mid-run, and several ``rar materialize`` started together on a fresh
DAGSTER_HOME in the same second."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from corpus_build.movie_text import content_hash
from corpus_build.schema import CORPUS_SCHEMA
from rar_pipeline.settings import get_settings

pytestmark = pytest.mark.hostile

REPO_ROOT = Path(__file__).resolve().parents[1]
RAR = shutil.which("rar", path=str(Path(sys.executable).parent)) or "rar"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAR_", "DAGSTER_"))}
    return {**env, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", **extra}


def _corpus(n: int) -> pl.DataFrame:
    rows = []
    for i in range(n):
        row = dict(movie_id=f"tt{i + 1:07d}", title=f"Film number {i}", year=1950 + i, genres=["Drama"], directors=[],
                   cast=[], runtime_minutes=None, plot=f"The story of film {i}.", aliases=[], imdb_rating=None,
                   imdb_votes=None, sources=["test"])
        rows.append(row | {"content_hash": content_hash(row)})
    return pl.DataFrame(rows, schema=CORPUS_SCHEMA)


# Children of a start line: each imports what it needs, says it is ready (a file in the folder of
# argv[1]) and waits for the test to write the start time into argv[1], so all start within a millisecond.
START_LINE = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    def wait_for_start_line():
        go = Path(sys.argv[1])
        (go.parent / f"ready-{os.getpid()}").touch()
        while not go.exists() or not go.read_text():
            time.sleep(0.01)
        start_at = float(go.read_text())
        while time.time() < start_at:
            pass
""")


def start_together(go: Path, processes: list[subprocess.Popen], second_boundary: bool = False) -> None:
    """Wait until every child is ready, then give them one start time (the next whole second + 0.1 s
    with ``second_boundary``, so they also start within the same second)."""
    _wait_for(lambda: len(list(go.parent.glob("ready-*"))) == len(processes), 240, "the children to be ready",
              processes[0])
    start_at = int(time.time()) + 1.1 if second_boundary else time.time() + 0.5
    tmp = go.with_suffix(".tmp")
    tmp.write_text(str(start_at))
    tmp.rename(go)


SYNC_SCRIPT = START_LINE + textwrap.dedent("""
    import polars as pl
    from corpus_build.embed import Embedder
    from corpus_build.vector_store import VectorStore, sync_vectors
    embedder = Embedder(batch_size=8, precision="fp32")
    embedder.encode(["warm up"])  # the model is loaded before the start line: both syncs plan at once
    wait_for_start_line()
    stats = sync_vectors(pl.read_parquet(sys.argv[2]), VectorStore(sys.argv[3]), embedder, commit_rows=8,
                         progress=False)
    print("synced", stats.rows, stats.embedded)
""")


@pytest.mark.slow
def test_two_concurrent_vector_syncs_store_each_film_once_and_a_rerun_repairs_duplicates(tmp_path):
    from corpus_build.vector_store import VectorStore

    corpus = _corpus(40)
    corpus.write_parquet(tmp_path / "corpus.parquet")
    uri, go = str(tmp_path / "lancedb"), tmp_path / "start" / "go"
    go.parent.mkdir()
    syncs = [subprocess.Popen([sys.executable, "-c", SYNC_SCRIPT, str(go), str(tmp_path / "corpus.parquet"), uri],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    start_together(go, syncs)
    outputs = [p.communicate(timeout=180) for p in syncs]
    assert all(p.returncode == 0 for p in syncs), [err[-2000:] for _, err in outputs]
    ids = VectorStore(uri).read_columns(["movie_id"])["movie_id"]
    assert ids.len() == 40 and ids.n_unique() == 40
    assert sorted(int(out.split()[2]) for out, _ in outputs) == [0, 40]  # the second found nothing to do

    # a table damaged before (an unlocked writer, an object store): the next sync repairs it
    from corpus_build.embed import Embedder
    from corpus_build.vector_store import sync_vectors

    store = VectorStore(uri)
    store.table.add(store.table.search().where("movie_id IN ('tt0000001', 'tt0000002')").limit(None).to_arrow())
    assert store.count() == 42
    stats = sync_vectors(corpus, VectorStore(uri), Embedder(batch_size=8, precision="fp32"), progress=False)
    ids = VectorStore(uri).read_columns(["movie_id"])["movie_id"]
    assert ids.len() == 40 and ids.n_unique() == 40
    assert (stats.repaired, stats.embedded, stats.rows) == (2, 2, 40)


def _tiny_mirror(folder: Path) -> Path:
    """A RAR_SOURCE_MIRROR holding only a small ml-latest-small catalogue."""
    movielens = folder / "movielens" / "ml-latest-small"
    movielens.mkdir(parents=True)
    films = [(i, f"Film number {i} ({1950 + i})", 100000 + i) for i in range(1, 41)]
    (movielens / "movies.csv").write_text("movieId,title,genres\n" + "".join(f"{i},{t},Drama\n" for i, t, _ in films))
    (movielens / "links.csv").write_text("movieId,imdbId,tmdbId\n" + "".join(f"{i},{n},\n" for i, _, n in films))
    return folder


def _wait_for(predicate, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := predicate()):
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the command exited ({process.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_a_killed_materialize_stops_everything_and_its_run_ends_failed(tmp_path, monkeypatch):
    from rar_pipeline.sensors import new_release_sensor, vectors_run_in_flight

    home, mirror = tmp_path / "home", _tiny_mirror(tmp_path / "mirror")
    env = _env(RAR_HOME=str(home), RAR_PROFILE="full", RAR_SOURCE_MIRROR=str(mirror))
    log = open(tmp_path / "materialize.log", "w")  # noqa: SIM115 - the child writes into it
    cli = subprocess.Popen([RAR, "materialize", "--job", "corpus_refresh"], env=env, stdout=log, stderr=log,
                           start_new_session=True)
    try:
        # the command has created its storage once a step runs (opening it earlier would race its creation)
        _wait_for(lambda: "STEP_START" in (tmp_path / "materialize.log").read_text(), 120, "a step to start", cli)
        instance = dg.DagsterInstance.from_config(str(home / "dagster"))
        [run] = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert vectors_run_in_flight(instance), "the sensor's guard must see a whole-job CLI run"

        os.kill(cli.pid, signal.SIGKILL)
        cli.wait(timeout=30)
        _wait_for(lambda: not _group_alive(cli.pid), 30, "every process of the command's group to exit")
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
        log.close()
    events = len(instance.all_logs(run.run_id))
    time.sleep(3)
    assert len(instance.all_logs(run.run_id)) == events, "something kept writing events after the kill"
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED

    # the sensor's next tick marks the orphan failed and does not wait on it
    monkeypatch.setenv("RAR_HOME", str(home))
    monkeypatch.setenv("RAR_PROFILE", "full")
    monkeypatch.setenv("RAR_SOURCE_MIRROR", str(mirror))
    get_settings.cache_clear()
    try:
        result = new_release_sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    finally:
        get_settings.cache_clear()
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert "in flight" not in (result.skip_message or "")
    failure = [e for e in instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.event_type_value
               == "PIPELINE_FAILURE"]
    assert failure and "is gone" in failure[-1].dagster_event.message


MATERIALIZE_SCRIPT = START_LINE + textwrap.dedent("""
    import dagster
    import rar_pipeline.definitions
    from rar_pipeline.cli import main
    wait_for_start_line()
    try:
        main(["materialize", "--job", "nightly_alignment"])
    except SystemExit as done:
        print("exit", done.code)
""")


@pytest.mark.slow
def test_commands_started_together_on_a_fresh_home_share_healthy_storage_and_distinct_rounds(tmp_path):
    home, go = tmp_path / "home", tmp_path / "start" / "go"
    go.parent.mkdir()
    starts = [subprocess.Popen([sys.executable, "-c", MATERIALIZE_SCRIPT, str(go)], env=_env(RAR_HOME=str(home)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    start_together(go, starts, second_boundary=True)
    outputs = [p.communicate(timeout=240) for p in starts]
    for out, err in outputs:
        assert "exit" in out, err[-3000:]
        assert "alembic" not in err and "UNIQUE constraint" not in err, err[-3000:]
    for db in (home / "dagster").rglob("*.db"):
        with sqlite3.connect(db) as con:
            tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
            if "alembic_version" in tables:
                assert con.execute("select count(*) from alembic_version").fetchone()[0] == 1, db
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    runs = instance.get_runs()
    assert len(runs) == 4
    rounds = [run.tags["dagster/partition"] for run in runs]
    assert len(set(rounds)) == 4 and len(set(instance.get_dynamic_partitions("alignment_rounds"))) == 4

def test_round_keys_made_in_the_same_second_differ_and_sort_by_time():
    from rar_pipeline.partitions import new_round_key

    keys = [new_round_key() for _ in range(200)]
    assert len(set(keys)) == len(keys) and keys == sorted(keys)
    assert all(key.startswith("round-") for key in keys)
