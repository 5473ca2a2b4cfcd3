"""The ``rar`` command: run the main job, query tables, search and recommend from a shell."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click

from corpus_build.movie_text import strip_unsafe
from rar_pipeline.settings import describe_settings_error, get_settings

SEARCH_K_MAX, RECOMMEND_K_MAX = 1000, 100
# Statement types `rar sql` runs: queries only (DESCRIBE, SHOW and SUMMARIZE parse as SELECT).
READ_ONLY_STATEMENTS = ("SELECT", "EXPLAIN")
_CANNOT_WRITE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC}


class RarGroup(click.Group):
    """The ``rar`` group: errors a user causes (a bad RAR_* setting, a RAR_HOME it may not read or
    write, a full disk) end in one line, without a traceback."""

    def invoke(self, ctx: click.Context):
        from pydantic import ValidationError

        try:
            return super().invoke(ctx)
        except ValidationError as error:
            raise click.ClickException(describe_settings_error(error)) from None
        except OSError as error:
            if error.errno not in _CANNOT_WRITE:
                raise
            raise click.ClickException(f"{error.strerror}: {error.filename or '?'} (check the permissions of "
                                       "RAR_HOME: commands that write need it writable)") from None


@click.group(cls=RarGroup)
def main() -> None:
    """rar-pipeline: retrieval-augmented conversational recommendation on Dagster."""


def printable(value) -> str:
    """Text from a table, safe for a terminal: no control or bidi-override characters."""
    return strip_unsafe(str(value))


def require_writable(folder: Path) -> None:
    """Stop in one line when ``folder`` (or the object store under an s3:// home) cannot be written,
    before any work starts."""
    from corpus_build.storage import describe, is_remote

    if is_remote(folder):
        probe = folder / ".rar-write-test"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except Exception as error:  # noqa: BLE001 - any SDK error: credentials, endpoint, bucket, permissions
            raise click.ClickException(f"RAR_HOME={describe(folder)} is not writable ({_first_line(error)}): check "
                                       "the bucket and the AWS_* credentials and endpoint") from None
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".rar-write-test-"):
            pass
    except OSError as error:
        raise click.ClickException(f"RAR_HOME={folder} is not writable ({error.strerror}): "
                                   "point RAR_HOME at a folder you can write") from None


DAGSTER_YAML = """\
# The Dagster instance of rar-pipeline, written by `rar materialize` when absent (edit freely).
# Runs, events and schedules live in SQLite files in this folder (Dagster's defaults), shared by
# `rar materialize` and `DAGSTER_HOME=<this folder> dagster dev -w workspace.yaml`.
# Settings: https://docs.dagster.io/deployment/oss/dagster-yaml (e.g. `telemetry: {enabled: false}`).
"""


def ensure_dagster_home() -> str:
    """Use ``$DAGSTER_HOME`` if set, else ``$RAR_HOME/dagster`` (under an object-store RAR_HOME: a local folder
    that belongs to it, since Dagster's SQLite storage needs a disk), so runs appear in ``dagster dev``; the
    folder gets a ``dagster.yaml`` when it has none (Dagster warns at every start without one)."""
    from corpus_build.storage import is_remote, working_folder

    settings = get_settings()
    default = working_folder(settings.home / "dagster") if is_remote(settings.home) else settings.path("dagster", "dagster.yaml").parent
    home = os.environ.get("DAGSTER_HOME") or str(default)
    os.makedirs(home, exist_ok=True)
    config = Path(home) / "dagster.yaml"
    if not config.exists():
        from corpus_build.atomic import write_bytes_atomic

        write_bytes_atomic(DAGSTER_YAML.encode(), config)
    os.environ["DAGSTER_HOME"] = home
    return home


@contextlib.contextmanager
def dagster_storage_lock() -> Iterator[str]:
    """DAGSTER_HOME (:func:`ensure_dagster_home`), held by this process alone: two commands starting
    together on a fresh home would both create and stamp its SQLite storage (two ``alembic_version``
    rows fail every later run) and could add the same round."""
    from filelock import FileLock

    home = ensure_dagster_home()
    with FileLock(os.path.join(home, ".rar-storage.lock")):
        yield home


def open_instance():
    """The Dagster instance of DAGSTER_HOME with every storage created (or migrated) under the lock."""
    import dagster as dg

    with dagster_storage_lock():
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)
        instance.get_dynamic_partitions("alignment_rounds")
        instance.all_instigator_state()
    return instance


def add_round(instance) -> str:
    """A new alignment round partition whose key no other round has (several commands may start in one second)."""
    from rar_pipeline.partitions import ALIGNMENT_ROUNDS, new_round_key

    with dagster_storage_lock():
        taken = set(instance.get_dynamic_partitions(ALIGNMENT_ROUNDS.name))
        key = new_round_key()
        while key in taken:
            key = new_round_key()
        instance.add_dynamic_partitions(ALIGNMENT_ROUNDS.name, [key])
    return key


def interrupt_on_termination() -> None:
    """SIGTERM and SIGHUP stop the job the way Ctrl-C does, so Dagster records the run as failed rather than
    leaving it STARTED (a ``kill -9`` cannot be caught: :func:`run_owner.fail_orphaned_runs` handles that)."""
    import signal

    def interrupt(signum, _frame):
        raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


@main.command()
@click.option("--job", "job_name", default="main", show_default=True,
              help="Job to execute: main (everything), nightly_alignment, evaluation, corpus_refresh.")
@click.option("--select", "selection", default=None,
              help="Only these assets of the job, in Dagster's asset selection syntax, e.g. '+movie_corpus' or "
              "'not key:movie_vectors' (default: the whole job).")
def materialize(job_name: str, selection: str | None) -> None:
    """Execute a job from this process (default: the main job: every asset, with a new alignment round),
    its steps under RAR_EXECUTOR (default: one process per step), recorded like a run launched from the UI:
    it shows under its job and on the timeline of `dagster dev`.

    A round that the promotion gate rejects is kept for inspection and is not an error: the run succeeds,
    the round's promotion_gate check warns with the gate's figures, and the aligned retriever stays where
    it was. Before any round has passed, the report is then built by a second run (the evaluation job)."""
    from dagster import DagsterError

    from assets.alignment import GATE_CHECK
    from assets.keys import REPORT
    from rar_pipeline.definitions import defs
    from rar_pipeline.job_runs import check_evaluations, execute_job, materialized, resolve_selection
    from rar_pipeline.jobs import JOBS
    from rar_pipeline.run_owner import fail_orphaned_runs, owner_tags

    settings = get_settings()
    require_writable(settings.home)
    if job_name not in {job.name for job in JOBS}:
        raise click.ClickException(f"no job {job_name!r}; jobs: {', '.join(job.name for job in JOBS)}")
    job = defs.resolve_job_def(job_name)
    try:
        assets = resolve_selection(job_name, selection)[0] if selection else job.asset_layer.executable_asset_keys
    except (ValueError, DagsterError) as error:  # nothing selected, or not Dagster's selection syntax
        raise click.ClickException(f"--select: {error}") from None
    instance = open_instance()
    for run_id in fail_orphaned_runs(instance):
        click.echo(f"run {run_id} was left in flight by a process that is gone: marked failed", err=True)
    partitioned = any(defs.resolve_asset_graph().get(key).partitions_def is not None for key in assets)
    round_key = add_round(instance) if partitioned else None
    click.echo(f"profile={settings.profile} RAR_HOME={settings.home} DAGSTER_HOME={os.environ['DAGSTER_HOME']} "
               f"round={round_key}")
    interrupt_on_termination()
    run = execute_job(instance, job_name, partition_key=round_key, tags=owner_tags(), selection=selection)
    click.echo(f"run {run.run_id}: {run.status.value}")
    if not run.is_success:
        sys.exit(1)
    for gate in check_evaluations(instance, run.run_id, GATE_CHECK):
        if not gate.passed:
            click.echo(f"{round_key} was rejected by the promotion gate: {gate.metadata['reason'].value} "
                       "(aligned_retriever unchanged; see the round's promotion_gate check)")
    if REPORT in assets and REPORT not in materialized(instance, run.run_id):
        click.echo("no round has passed the promotion gate yet: building the report in the evaluation job")
        report = execute_job(instance, "evaluation", tags=owner_tags())
        click.echo(f"run {report.run_id}: {report.status.value}")
        sys.exit(0 if report.is_success else 1)
    sys.exit(0)



@main.command()
@click.argument("query")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="Rows to print at most.")
def sql(query: str, limit: int) -> None:
    """Run a read-only DuckDB QUERY over the pipeline's Parquet tables, each a view named after its table.

    Only queries run (SELECT, DESCRIBE, SUMMARIZE, EXPLAIN); DuckDB may read the tables' files and
    nothing else, so COPY, ATTACH, read_csv('/etc/passwd') and the like fail. Under an object-store
    RAR_HOME the tables are Arrow datasets read through the storage layer and DuckDB opens no file at
    all. The tables are the pipeline's outputs: change them by materialising, not by hand."""
    import duckdb

    from corpus_build.storage import arrow_dataset, is_remote

    tables_dir = get_settings().tables_dir
    paths = sorted(tables_dir.glob("*.parquet")) if tables_dir.is_dir() else []
    con = duckdb.connect()
    for path in paths:
        if is_remote(path):  # scanned through Arrow (no DuckDB extension, no file access for DuckDB itself)
            con.register(path.stem, arrow_dataset(path))
        else:
            con.execute(f"create view \"{path.stem}\" as select * from read_parquet({_sql_text(path)})")
    _lock_to_files(con, [path for path in paths if not is_remote(path)])
    known = ", ".join(p.stem for p in paths) or f"none yet under {tables_dir}"
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as error:
        raise click.ClickException(f"{_first_line(error)} (known tables: {known})") from None
    if not statements:
        raise click.ClickException('nothing to run: give a query, e.g. rar sql "select count(*) from movie_corpus"')
    refused = [s.type.name for s in statements if s.type.name not in READ_ONLY_STATEMENTS]
    if refused:
        raise click.ClickException(f"rar sql is read-only: {refused[0]} statements are not run "
                                   "(SELECT, DESCRIBE, SUMMARIZE and EXPLAIN are)")
    try:
        relation = con.sql(query)
    except duckdb.PermissionException as error:
        raise click.ClickException(f"rar sql reads only the pipeline's tables: {_first_line(error)}") from None
    except duckdb.Error as error:
        raise click.ClickException(f"{_first_line(error)} (known tables: {known})") from None
    if relation is not None:
        relation.limit(limit).show(max_width=200)


def _sql_text(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _lock_to_files(con, paths: list[Path]) -> None:
    """Let DuckDB open these files only, install or load nothing, and never change that again."""
    con.execute(f"set allowed_paths = [{', '.join(_sql_text(p) for p in paths)}]")
    for setting in ("enable_external_access", "autoinstall_known_extensions", "autoload_known_extensions"):
        con.execute(f"set {setting} = false")
    con.execute("set lock_configuration = true")


def _first_line(error: Exception) -> str:
    return next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)


def vectors_coverage_note(store, corpus_path: Path) -> str | None:
    """A warning when movie_vectors does not hold one vector per film of movie_corpus (a build that was
    interrupted or is still running); None when the counts agree or there is no corpus to compare."""
    if not corpus_path.exists():
        return None
    from corpus_build.storage import parquet_rows

    films, vectors = parquet_rows(corpus_path), store.count()
    if vectors == films:
        return None
    return (f"movie_vectors holds {vectors:,} vectors for the {films:,} films of movie_corpus (a build was "
            "interrupted or is running): results may miss films until `rar materialize --job corpus_refresh` "
            "completes")


@main.command()
@click.argument("text")
@click.option("--k", default=10, show_default=True, type=click.IntRange(1, SEARCH_K_MAX), help="How many films to return.")
@click.option("--year-min", type=int, default=None, help="Only films from this year on.")
@click.option("--year-max", type=int, default=None, help="Only films up to this year.")
@click.option("--exclude", multiple=True, help="A movie_id to leave out (repeatable).")
def search(text: str, k: int, year_min: int | None, year_max: int | None, exclude: tuple[str, ...]) -> None:
    """Films of movie_vectors closest in meaning to TEXT, e.g. rar search "space opera with a twist"."""
    from corpus_build.embed import ModelUnavailableError

    if not text.strip():
        raise click.ClickException('nothing to search for: give a description, e.g. rar search "space opera with a twist"')
    settings = get_settings()
    store = settings.vector_store()
    if not store.exists():
        raise click.ClickException(f"no movie_vectors table at {settings.vector_db_uri}: run `rar materialize` first")
    if note := vectors_coverage_note(store, settings.table_file("movie_corpus")):
        click.echo(f"warning: {note}", err=True)
    try:
        hits = store.search(text, k=k, year_min=year_min, year_max=year_max, exclude_ids=exclude)
    except ModelUnavailableError as error:
        raise click.ClickException(str(error)) from error
    for rank, hit in enumerate(hits, 1):
        genres = printable(", ".join(hit["genres"] or []))
        click.echo(f"{rank:>3}. {hit['score']:.3f}  {printable(hit['movie_id']):<14} {printable(hit['title'])} "
                   f"({hit['year'] or '?'})  {genres}")
    if not hits:
        click.echo("no film matches the filters")


@main.command()
@click.argument("text", required=False)
@click.option("--k", default=10, show_default=True, type=click.IntRange(1, RECOMMEND_K_MAX),
              help="How many films to recommend.")
@click.option("--backend", type=click.Choice(["embedding", "llama_cpp", "openai"]), default=None,
              help="Generator backend (default: RAR_GENERATOR_BACKEND).")
@click.option("--no-service", is_flag=True, help="Answer in this process (loads every model each time: slow).")
@click.option("--stop-service", is_flag=True, help="Stop the recommend service of these settings and exit.")
def recommend(text: str | None, k: int, backend: str | None, no_service: bool, stop_service: bool) -> None:
    """Recommend films for a message, e.g. rar recommend "I loved Alien and Arrival, what next?" --k 10.

    Links the titles TEXT mentions to the corpus, retrieves candidates with the current retriever and
    ranks them with the generator (RAR_GENERATOR_*; the key only from $RAR_GENERATOR_API_KEY). The first
    call starts a background service that keeps the models loaded (RAR_RECOMMEND_SERVICE,
    RAR_RECOMMEND_IDLE_MINUTES), so later calls answer in about a second."""
    from rar_pipeline import recommend_service as service

    settings = get_settings()
    key = service.service_key(os.environ, settings.home)
    if stop_service:
        pid = service.stop(key)
        click.echo(f"stopped the recommend service (pid {pid})" if pid else "no recommend service was running")
        return
    if not text or not text.strip():
        raise click.ClickException('nothing was asked: give a message, e.g. rar recommend "I loved Alien, what next?"')
    corpus_path = settings.table_file("movie_corpus")
    if not corpus_path.exists():
        raise click.ClickException(f"the pipeline has not been materialised yet (no {corpus_path}): run `rar materialize`")
    backend = backend or settings.generator_backend
    if backend in service.SERVED_BACKENDS and settings.recommend_service and not no_service:
        request = {"text": text, "k": k, "backend": backend}
        try:
            answer = service.ask(request, key, service.log_path(key),
                                 60.0 * settings.recommend_idle_minutes,
                                 on_start=lambda: click.echo("starting the recommend service (models load once; later "
                                                             "calls answer in about a second)...", err=True))
        except (service.ServiceError, OSError) as error:
            raise click.ClickException(str(error)) from None
        if not answer.get("ok"):
            raise click.ClickException(answer.get("error", "the recommend service failed"))
    else:
        answer = _recommend_here(text, k, backend)
    _print_recommendations(answer)


def _recommend_here(text: str, k: int, backend: str) -> dict:
    """The same answer as the service's, computed in this process."""
    import dagster as dg

    from rar_pipeline.recommend_service import ServiceError, load_recommender
    from rar_pipeline.resources import GENERATOR_API_KEY_ENV

    try:
        recommender, retriever_name, _ = load_recommender(backend, api_key=dg.EnvVar(GENERATOR_API_KEY_ENV).get_value())
    except ServiceError as error:
        raise click.ClickException(str(error)) from None
    except (ValueError, RuntimeError, FileNotFoundError) as error:  # e.g. no model name, no local-llm extra
        raise click.ClickException(f"generator: {error}") from error
    with recommender.generator as generator:
        rows, mentioned = recommender.recommend(text, k)
        stats = generator.stats
    problems = [f"{int(n)} {what}" for n, what in ((stats.failures, "failed"), (stats.unparsed, "unparsed")) if n]
    return {"rows": rows, "mentioned": mentioned, "retriever": retriever_name, "generator": generator.name,
            "problems": problems}


def _print_recommendations(answer: dict) -> None:
    if answer["mentioned"]:
        click.echo("mentioned: " + "; ".join(printable(m) for m in answer["mentioned"]))
    if answer["retriever"].startswith("movie_vectors search"):
        settings = get_settings()
        if note := vectors_coverage_note(settings.vector_store(), settings.table_file("movie_corpus")):
            click.echo(f"warning: {note}", err=True)
    problems = answer["problems"]
    click.echo(f"retriever: {printable(answer['retriever'])}; generator: {answer['generator']}"
               + (f" ({', '.join(problems)}: kept retriever order)" if problems else ""))
    for row in answer["rows"]:
        click.echo(f"{row['rank']:>3}. {printable(row.get('title') or row['movie_id'])} ({row.get('year') or '?'})")


if __name__ == "__main__":
    main()
