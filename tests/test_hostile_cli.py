"""The ``rar`` command with hostile input: control characters in tables, a half-built movie_vectors,
a generator that answers nothing usable, SQL that tries to write or read outside the tables, absurd
``--k`` values, empty messages, bad settings and a read-only RAR_HOME."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from llm_server import MisbehavingServer

from corpus_build.movie_text import content_hash
from corpus_build.schema import CORPUS_SCHEMA
from rar_pipeline.cli import main
from rar_pipeline.settings import get_settings

pytestmark = pytest.mark.hostile

RAR = shutil.which("rar", path=str(Path(sys.executable).parent)) or "rar"
FILMS = [  # what a corpus built before control characters were stripped may still hold
    ("tt0078748", "Alien", 1979, "A spaceship crew is hunted by a deadly alien creature."),
    ("tt0090605", "Aliens", 1986, "Marines return to the alien planet and fight the creatures."),
    ("tt2543164", "Arrival", 2016, "A linguist talks to alien visitors whose language bends time."),
    ("tt0133093", "The Matrix", 1999, "A hacker learns his world is a simulation run by machines."),
    ("tt0000001", "Evil\x1b]0;pwned\x07\x1b[2J Title \u202eexe.txt", 2001, "An alien film with a hostile title."),
    ("tt0114709", "Toy Story", 1995, "Toys come to life when their boy leaves the room."),
    ("tt0068646", "The Godfather", 1972, "A crime family's patriarch hands power to his son."),
]
UNSAFE_CATEGORIES = {"Cc", "Cf"}


def corpus_frame(films=FILMS) -> pl.DataFrame:
    rows = []
    for movie_id, title, year, plot in films:
        row = dict(movie_id=movie_id, title=title, year=year, genres=["Science Fiction"], directors=[], cast=[],
                   runtime_minutes=None, plot=plot, aliases=[], imdb_rating=None, imdb_votes=None, sources=["test"])
        rows.append(row | {"content_hash": content_hash(row)})
    return pl.DataFrame(rows, schema=CORPUS_SCHEMA)


@pytest.fixture(scope="module")
def built_home(tmp_path_factory) -> Path:
    """A RAR_HOME whose movie_vectors lacks two of the corpus's films (a build killed half way)."""
    from corpus_build.embed import Embedder
    from corpus_build.vector_store import VectorStore, sync_vectors

    home = tmp_path_factory.mktemp("rar_home")
    (home / "tables").mkdir()
    corpus = corpus_frame()
    corpus.write_parquet(home / "tables" / "movie_corpus.parquet")
    store = VectorStore(str(home / "lancedb"))
    sync_vectors(corpus, store, Embedder(batch_size=8, precision="fp32"), progress=False)
    store.delete(["tt0114709", "tt0068646"])
    return home


def rar(*args: str, home: Path, **env: str):
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(main, list(args), env={"RAR_HOME": str(home), "HF_HUB_OFFLINE": "1", **env})
    finally:
        get_settings.cache_clear()


def one_line_error(result) -> str:
    """The error of a failed invocation, which must be a single 'Error: ...' line and no traceback."""
    assert result.exit_code != 0
    assert result.exc_info is None or isinstance(result.exc_info[1], SystemExit), result.exc_info
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.mark.slow
def test_search_warns_about_a_half_built_table_and_prints_no_control_characters(built_home):
    result = rar("search", "alien creatures in space", "--k", "5", home=built_home)
    assert result.exit_code == 0, result.output
    assert "movie_vectors holds 5 vectors for the 7 films of movie_corpus" in result.output
    assert "Evil" in result.output
    assert not [ch for ch in result.output if unicodedata.category(ch) in UNSAFE_CATEGORIES and ch not in "\r\n"]


@pytest.mark.slow
def test_recommend_reports_failed_and_unparsed_answers_separately(built_home):
    server = MisbehavingServer(default="ok:I cannot help with that.")
    try:
        env = {"RAR_GENERATOR_BACKEND": "openai", "RAR_GENERATOR_MODEL": "scripted", "RAR_GENERATOR_MAX_RETRIES": "0",
               "RAR_GENERATOR_BASE_URL": server.base_url}
        unparsed = rar("recommend", "I loved Alien, what next?", "--k", "3", home=built_home, **env)
        assert unparsed.exit_code == 0, unparsed.output
        assert "(1 unparsed: kept retriever order)" in unparsed.output
        server.default = "null"
        failed = rar("recommend", "Something like Arrival?", "--k", "3", home=built_home, **env)
        assert "(1 failed: kept retriever order)" in failed.output
        assert "warning: movie_vectors holds 5 vectors" in failed.output
        printed = unparsed.output + failed.output
        assert not [ch for ch in printed if unicodedata.category(ch) in UNSAFE_CATEGORIES and ch not in "\r\n"]
    finally:
        server.close()


@pytest.mark.parametrize("args", [
    ("search", "alien", "--k", "0"), ("search", "alien", "--k", "-3"), ("search", "alien", "--k", "1000000000"),
    ("recommend", "I loved Alien", "--k", "0"), ("recommend", "I loved Alien", "--k", "-3"),
    ("recommend", "I loved Alien", "--k", "1000000000"),
])
def test_absurd_k_is_refused_before_any_work(args, tmp_path):
    result = rar(*args, home=tmp_path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Invalid value for '--k'" in result.output and "range" in result.output


@pytest.mark.parametrize(("command", "said"), [("recommend", "nothing was asked"), ("search", "nothing to search for")])
@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_message_says_nothing_was_asked(command, said, text, tmp_path):
    assert said in one_line_error(rar(command, text, home=tmp_path))


@pytest.mark.parametrize(("variable", "value"), [("RAR_PROFILE", "bogus"), ("RAR_SEED", "abc"),
                                                  ("RAR_SOURCE_MIRROR", "/no/such/folder")])
@pytest.mark.parametrize("command", [("sql", "select 1"), ("search", "alien"), ("materialize", "--job", "evaluation")])
def test_a_bad_setting_is_one_line_naming_the_variable(variable, value, command, tmp_path):
    error = one_line_error(rar(*command, home=tmp_path, **{variable: value}))
    assert f"{variable}={value!r}" in error


def _tables(home: Path) -> Path:
    (home / "tables").mkdir(parents=True, exist_ok=True)
    corpus_frame().write_parquet(home / "tables" / "movie_corpus.parquet")
    return home / "tables" / "movie_corpus.parquet"


@pytest.mark.parametrize("query", [
    "COPY (SELECT 1 AS movie_id) TO '{corpus}'",
    "COPY (SELECT 1 AS movie_id) TO '{corpus}' (USE_TMP_FILE false)",
    "COPY movie_corpus TO '{outside}'",
    "ATTACH '{outside}.duckdb' AS x",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT 1; COPY (SELECT 1) TO '{outside}'",
    "INSTALL httpfs",
    "SET enable_external_access = true",
])
def test_sql_is_read_only_over_the_pipeline_tables(query, tmp_path):
    corpus = _tables(tmp_path / "home")
    before = corpus.read_bytes()
    outside = tmp_path / "stolen.csv"
    error = one_line_error(rar("sql", query.format(corpus=corpus, outside=outside), home=tmp_path / "home"))
    assert "read-only" in error or "reads only the pipeline's tables" in error
    assert corpus.read_bytes() == before
    assert not list(tmp_path.glob("stolen*"))


def test_sql_still_answers_queries(tmp_path):
    _tables(tmp_path / "home")
    result = rar("sql", "select count(*) as films from movie_corpus", home=tmp_path / "home")
    assert result.exit_code == 0 and "7" in result.output
    described = rar("sql", "describe movie_corpus", home=tmp_path / "home")
    assert described.exit_code == 0 and "content_hash" in described.output
    unknown = one_line_error(rar("sql", "select * from no_such_table", home=tmp_path / "home"))
    assert "movie_corpus" in unknown


def test_a_read_only_rar_home_is_one_line(tmp_path):
    """A real unprivileged process (``nobody`` when the tests run as root) against a 0555 RAR_HOME."""
    import tempfile

    outer = Path(tempfile.mkdtemp(prefix="rar-ro-"))  # pytest's own tmp folders are private (0700)
    outer.chmod(0o755)
    home = outer / "home"
    _tables(home)
    home.chmod(0o555)
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot drop privileges to test a read-only folder")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = subprocess.run([*prefix, sys.executable, "-c", ""], capture_output=True, text=True, timeout=60)
        if probe.returncode != 0:
            pytest.skip(f"an unprivileged user cannot run this virtualenv (a checkout under a private folder?): "
                        f"{probe.stderr.strip()[-200:]}")
    env = {**os.environ, "RAR_HOME": str(home), "HOME": str(outer), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("DAGSTER_HOME", None)
    try:
        done = subprocess.run([*prefix, RAR, "materialize", "--job", "evaluation"], env=env, capture_output=True,
                              text=True, timeout=120)
        queried = subprocess.run([*prefix, RAR, "sql", "select count(*) from movie_corpus"], env=env,
                                 capture_output=True, text=True, timeout=120)
    finally:
        home.chmod(0o755)
        shutil.rmtree(outer)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        f"Error: RAR_HOME={home} is not writable (Permission denied): point RAR_HOME at a folder you can write"]
    assert queried.returncode == 0 and "7" in queried.stdout, queried.stderr  # reading still works
