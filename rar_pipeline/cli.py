"""The ``rar`` command: run the main job, query tables, search and recommend from a shell."""

from __future__ import annotations

import os
import sys

import click

from rar_pipeline.settings import get_settings


@click.group()
def main() -> None:
    """rar-pipeline: retrieval-augmented conversational recommendation on Dagster."""


def ensure_dagster_home() -> str:
    """Use ``$DAGSTER_HOME`` if set, else ``$RAR_HOME/dagster``, so runs appear in ``dagster dev``."""
    home = os.environ.get("DAGSTER_HOME") or str(get_settings().path("dagster", "dagster.yaml").parent)
    os.makedirs(home, exist_ok=True)
    os.environ["DAGSTER_HOME"] = home
    return home


def rejected_by_gate(result) -> bool:
    """True when a run failed only because the alignment round's promotion gate rejected it."""
    from assets.alignment import GATE_CHECK

    failed_gate = any(
        e.check_name == GATE_CHECK and not e.passed for e in result.get_asset_check_evaluations()
    )
    failed_steps = {e.step_key for e in result.all_events if e.is_step_failure}
    return failed_gate and failed_steps <= {"alignment_round"}


@main.command()
@click.option("--job", "job_name", default="main", show_default=True,
              help="Job to execute: main (everything), nightly_alignment, evaluation, corpus_refresh.")
def materialize(job_name: str) -> None:
    """Execute a job in this process (default: the main job: every asset, with a new alignment round).

    A round that the promotion gate rejects is kept for inspection and is not an error here: the
    aligned retriever stays where it was and the evaluation report is rebuilt without it."""
    import dagster as dg

    from rar_pipeline.definitions import defs
    from rar_pipeline.partitions import ALIGNMENT_ROUNDS, new_round_key

    home = ensure_dagster_home()
    settings = get_settings()
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def(job_name)
    round_key = None
    if job.partitions_def is not None:
        round_key = new_round_key()
        instance.add_dynamic_partitions(ALIGNMENT_ROUNDS.name, [round_key])
    click.echo(f"profile={settings.profile} RAR_HOME={settings.home} DAGSTER_HOME={home} round={round_key}")
    result = job.execute_in_process(instance=instance, partition_key=round_key, raise_on_error=False)
    if result.success:
        sys.exit(0)
    if round_key and rejected_by_gate(result):
        click.echo(f"{round_key} was rejected by the promotion gate: aligned_retriever unchanged; rebuilding the report")
        report = defs.resolve_job_def("evaluation").execute_in_process(instance=instance, raise_on_error=False)
        sys.exit(0 if report.success else 1)
    sys.exit(1)


@main.command()
@click.argument("query")
@click.option("--limit", default=50, show_default=True, help="Rows to print at most.")
def sql(query: str, limit: int) -> None:
    """Run a DuckDB QUERY over the pipeline's Parquet tables, each a view named after its table."""
    import duckdb

    tables_dir = get_settings().tables_dir
    con = duckdb.connect()
    names = sorted(p.stem for p in tables_dir.glob("*.parquet")) if tables_dir.is_dir() else []
    for name in names:
        con.execute(f"create view \"{name}\" as select * from read_parquet('{tables_dir / name}.parquet')")
    try:
        relation = con.sql(query)
    except duckdb.Error as error:
        known = ", ".join(names) or f"none yet under {tables_dir}"
        raise click.ClickException(f"{error}\nknown tables: {known}") from error
    if relation is None:
        return
    relation.limit(limit).show(max_width=200)


@main.command()
@click.argument("text")
@click.option("--k", default=10, show_default=True, help="How many films to return.")
@click.option("--year-min", type=int, default=None, help="Only films from this year on.")
@click.option("--year-max", type=int, default=None, help="Only films up to this year.")
@click.option("--exclude", multiple=True, help="A movie_id to leave out (repeatable).")
def search(text: str, k: int, year_min: int | None, year_max: int | None, exclude: tuple[str, ...]) -> None:
    """Films of movie_vectors closest in meaning to TEXT, e.g. rar search "space opera with a twist"."""
    from corpus_build.embed import ModelUnavailableError
    from corpus_build.vector_store import VectorStore

    settings = get_settings()
    store = VectorStore.from_settings(settings)
    if not store.exists():
        raise click.ClickException(f"no movie_vectors table at {settings.vector_db_uri}: run `rar materialize` first")
    try:
        hits = store.search(text, k=k, year_min=year_min, year_max=year_max, exclude_ids=exclude)
    except ModelUnavailableError as error:
        raise click.ClickException(str(error)) from error
    for rank, hit in enumerate(hits, 1):
        genres = ", ".join(hit["genres"] or [])
        click.echo(f"{rank:>3}. {hit['score']:.3f}  {hit['movie_id']:<14} {hit['title']} ({hit['year'] or '?'})  {genres}")
    if not hits:
        click.echo("no film matches the filters")


def _recommend_retriever(settings):
    """(retrieve(history_ids, text, k), name): the trained retriever (aligned > sft > pretrained) when
    one has been materialised, else semantic search of movie_vectors; (None, reason) when neither exists."""
    from training.promotion import load_current_retriever

    if (retriever := load_current_retriever(settings)) is not None:
        name = getattr(retriever, "name", "retriever")
        return (lambda history, _text, k: retriever.retrieve(history, k, exclude=history)), name
    from corpus_build.embed import Embedder
    from corpus_build.vector_store import VectorStore

    store = VectorStore.from_settings(settings)
    if not store.exists():
        return None, f"neither a trained retriever nor a movie_vectors table at {settings.vector_db_uri}"
    embedder = Embedder.from_settings(settings)

    def retrieve(history, text, k):
        hits = store.search(embedder.encode([text])[0], k=k, exclude_ids=list(history))
        return [(hit["movie_id"], hit["score"]) for hit in hits]

    return retrieve, "movie_vectors search (no trained retriever yet)"


@main.command()
@click.argument("text")
@click.option("--k", default=10, show_default=True, help="How many films to recommend.")
@click.option("--backend", type=click.Choice(["embedding", "llama_cpp", "openai"]), default=None,
              help="Generator backend (default: RAR_GENERATOR_BACKEND).")
def recommend(text: str, k: int, backend: str | None) -> None:
    """Recommend films for a message, e.g. rar recommend "I loved Alien and Arrival, what next?" --k 10.

    Links the titles TEXT mentions to the corpus, retrieves candidates with the current retriever and
    ranks them with the generator (RAR_GENERATOR_*; the key only from $RAR_GENERATOR_API_KEY)."""
    import dagster as dg

    from rar_pipeline.resources import GENERATOR_API_KEY_ENV, GeneratorResource
    from training.recommend import recommend as run_recommend

    settings = get_settings()
    corpus_path = settings.table_path("movie_corpus")
    if not corpus_path.exists():
        raise click.ClickException(f"the pipeline has not been materialised yet (no {corpus_path}): run `rar materialize`")
    retrieve, retriever_name = _recommend_retriever(settings)
    if retrieve is None:
        raise click.ClickException(f"{retriever_name}: run `rar materialize` first")
    api_key = dg.EnvVar(GENERATOR_API_KEY_ENV).get_value()
    try:
        generator = GeneratorResource(backend=backend, api_key=api_key).make_generator()
    except (ValueError, RuntimeError, FileNotFoundError) as error:  # e.g. no model name, no local-llm extra
        raise click.ClickException(f"generator: {error}") from error
    with generator:
        rows, mentioned = run_recommend(text, k, corpus_path, retrieve, generator)
        stats = generator.stats
    if mentioned:
        click.echo("mentioned: " + "; ".join(mentioned))
    click.echo(f"retriever: {retriever_name}; generator: {generator.name}"
               + (f" ({int(stats.failures)} failed, kept retriever order)" if stats.failures else ""))
    for row in rows:
        click.echo(f"{row['rank']:>3}. {row.get('title') or row['movie_id']} ({row.get('year') or '?'})")


if __name__ == "__main__":
    main()
