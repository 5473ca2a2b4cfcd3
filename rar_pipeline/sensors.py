"""Sensors: the new-release sensor that refreshes only what changed upstream, and the declarative automation sensor."""

import json

import dagster as dg

from assets.keys import VECTORS
from assets.metadata import latest_metadata
from rar_pipeline.jobs import corpus_refresh_job
from rar_pipeline.run_owner import IN_FLIGHT, fail_orphaned_runs
from rar_pipeline.settings import get_settings


def profile_sources(settings):
    """The SourceSpecs of the current profile (the corpus registry)."""
    from corpus_build.sources.registry import sources_for_profile

    return sources_for_profile(settings.profile, settings.source_mirror)


def may_write_vectors(run: dg.DagsterRun) -> bool:
    """Whether ``run`` may materialise movie_vectors: its asset selection says so, or, when it records
    none (a whole-job run; ``execute_in_process`` records an empty one), its job holds the asset. A job
    these definitions do not know counts as writing it."""
    if run.asset_selection:
        return VECTORS in run.asset_selection
    from rar_pipeline.definitions import defs

    try:
        return VECTORS in defs.resolve_job_def(run.job_name).asset_layer.executable_asset_keys
    except Exception:  # noqa: BLE001 - an unknown or renamed job: assume the worst
        return True


def vectors_run_in_flight(instance: dg.DagsterInstance) -> bool:
    """A run that may write movie_vectors is queued or running."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT), limit=100)
    return any(may_write_vectors(run) for run in runs)


def vectors_built_from(instance: dg.DagsterInstance) -> str | None:
    """The movie_corpus file fingerprint the latest movie_vectors materialisation was built from."""
    return latest_metadata(instance, VECTORS).get("corpus_fingerprint")


def build_new_release_sensor(sources_for=profile_sources, name: str = "new_release_sensor", interval_s: int = 3600):
    """A sensor that refreshes the corpus when upstream changes and the vectors when the corpus does.

    - upstream catalog fingerprint (mirror/package file size+mtime, HTTP ETag/Last-Modified/
      Content-Length) differs from the cursor's: run ``corpus_refresh`` (sources, movie_corpus,
      movie_vectors; incremental);
    - else movie_corpus's file differs from the one movie_vectors was last built from: run
      movie_vectors only.
    Nothing is requested while a run that may write movie_vectors is in flight, or when an upstream
    file cannot be reached (a network blip is not a new release). Runs left in flight by a ``rar
    materialize`` process that is gone are marked failed first, so a killed command never blocks it.
    """

    @dg.sensor(
        name=name,
        job=corpus_refresh_job,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="New releases upstream (or a rebuilt movie_corpus) -> incremental corpus + vectors refresh.",
    )
    def _new_release(context: dg.SensorEvaluationContext):
        from corpus_build.catalog import catalog_fingerprint, file_fingerprint

        settings = get_settings()
        for run_id in fail_orphaned_runs(context.instance):
            context.log.warning(f"run {run_id} was left in flight by a process that is gone: marked failed")
        if vectors_run_in_flight(context.instance):
            return dg.SkipReason("a run that writes movie_vectors is in flight")
        try:
            specs = sources_for(settings)
        except ImportError as error:
            return dg.SkipReason(f"source registry unavailable: {error}")
        catalog = catalog_fingerprint(specs, settings.source_mirror)
        if catalog.unreachable:
            names = ", ".join(f"{f.source}/{f.name}" for f in catalog.unreachable)
            return dg.SkipReason(f"upstream not reachable, catalog not compared: {names}")
        cursor = json.loads(context.cursor) if context.cursor else {}
        files = {f"{f.source}/{f.name}": json.dumps(f.state, sort_keys=True) for f in catalog.files}
        context.update_cursor(json.dumps({"catalog": catalog.digest, "files": files}))
        if cursor.get("catalog") not in (None, catalog.digest):
            old = cursor.get("files", {})
            changed = sorted(k for k in files.keys() | old.keys() if files.get(k) != old.get(k))
            context.log.info(f"upstream catalog changed: {changed}")
            return dg.RunRequest(
                run_key=f"catalog-{catalog.digest[:16]}",
                tags={"rar/trigger": "catalog", "rar/changed_files": ",".join(changed)[:1000]},
            )
        corpus = file_fingerprint(settings.table_path("movie_corpus"))
        if corpus is not None and corpus != vectors_built_from(context.instance):
            return dg.RunRequest(
                run_key=f"corpus-{corpus}", asset_selection=[VECTORS], tags={"rar/trigger": "movie_corpus"}
            )
        first = "first look: catalog fingerprint recorded; " if "catalog" not in cursor else ""
        return dg.SkipReason(f"{first}upstream catalog and movie_corpus unchanged")

    return _new_release


new_release_sensor = build_new_release_sensor()

# Evaluates the assets' declarative automation conditions (evaluation_report: rebuilt after a promotion).
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.STOPPED,
    description="Declarative automation: evaluation_report is rebuilt when a retriever is promoted or retrained "
    "outside a job that rebuilds it already.",
)
SENSORS = [new_release_sensor, automation_sensor]
