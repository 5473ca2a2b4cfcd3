"""Runs of the code location's jobs started from the command line, recorded the way the UI records its own.

A run from ``JobDefinition.execute_in_process`` carries no code-location origin, so Dagster's UI leaves it
out of Jobs > main > Runs and of the Overview timeline (it shows only under Runs). :func:`execute_job`
creates the run from the code location's remote job instead, with the same origin, snapshot and tags a run
launched from the UI gets, then executes it from this process with the job's own executor (RAR_EXECUTOR,
``rar_pipeline.execution``: by default each step in its own process, orchestrated by this one, so a signal
that stops the command stops the run and its steps).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping

import dagster as dg

CODE_LOCATION = "rar_pipeline"  # the location name of workspace.yaml, [tool.dagster] and dagster_cloud.yaml
DEFINITIONS_MODULE = "rar_pipeline.definitions"
RUN_CONFIG: dict = {}  # the executor is the definitions' (RAR_EXECUTOR), configured there


def resolve_selection(job_name: str, selection: str) -> tuple[frozenset, frozenset]:
    """The assets of job ``job_name`` that ``selection`` (Dagster's asset selection syntax, e.g. ``+movie_corpus``
    or ``not key:movie_vectors``) names, and the checks on them; ValueError when it names none of them."""
    from rar_pipeline.definitions import defs

    job = defs.resolve_job_def(job_name)
    graph = defs.resolve_asset_graph()
    with warnings.catch_warnings():  # `not ...` goes through a beta parameter of Dagster 1.13: noise here
        warnings.simplefilter("ignore", dg.BetaWarning)
        keys = frozenset(dg.AssetSelection.from_string(selection).resolve(graph))
    keys &= job.asset_layer.executable_asset_keys
    if not keys:
        raise ValueError(f"{selection!r} selects no asset of job {job_name!r}")
    return keys, frozenset(check for check in graph.asset_check_keys if check.asset_key in keys)


def create_run(instance: dg.DagsterInstance, job_name: str, *, partition_key: str | None = None,
               tags: Mapping[str, str] | None = None, selection: str | None = None) -> dg.DagsterRun:
    """A run of ``job_name`` (NOT_STARTED) with the code location's origin, as the UI would create it; with
    ``selection``, a run of those assets of the job only (as the UI's "materialize selected")."""
    from dagster._core.definitions.selector import JobSubsetSelector
    from dagster._core.execution.execute_in_process import merge_run_tags
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    from rar_pipeline.definitions import defs

    assets, checks = resolve_selection(job_name, selection) if selection else (None, None)
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=DEFINITIONS_MODULE,
                             working_directory=os.getcwd()),
        location_name=CODE_LOCATION,
    )
    with origin.create_location(instance) as location:
        [repository] = location.get_repositories().values()
        remote_job = location.get_job(JobSubsetSelector(
            location_name=CODE_LOCATION, repository_name=repository.name, job_name=job_name, op_selection=None,
            asset_selection=assets, asset_check_selection=checks,
        ))
        run_tags = merge_run_tags(defs.resolve_job_def(job_name), partition_key, tags, assets, instance, RUN_CONFIG)
        plan = location.get_execution_plan(remote_job, RUN_CONFIG, step_keys_to_execute=None, known_state=None,
                                           instance=instance)
        return instance.create_run(
            job_name=job_name, run_id=None, run_config=RUN_CONFIG, resolved_op_selection=None,
            step_keys_to_execute=None, status=None, tags=run_tags, root_run_id=None, parent_run_id=None,
            job_snapshot=remote_job.job_snapshot, execution_plan_snapshot=plan.execution_plan_snapshot,
            parent_job_snapshot=remote_job.parent_job_snapshot, asset_selection=assets, asset_check_selection=checks,
            op_selection=None, remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(), asset_graph=repository.asset_graph,
        )


def execute_job(instance: dg.DagsterInstance, job_name: str, *, partition_key: str | None = None,
                tags: Mapping[str, str] | None = None, selection: str | None = None) -> dg.DagsterRun:
    """Create a run of ``job_name`` (:func:`create_run`), execute it from this process and return it, finished.
    Step failures are recorded in the run, not raised."""
    from dagster._core.execution.api import execute_run
    from dagster._utils.hosted_user_process import recon_job_from_origin

    run = create_run(instance, job_name, partition_key=partition_key, tags=tags, selection=selection)
    execute_run(recon_job_from_origin(run.job_code_origin), run, instance)
    return instance.get_run_by_id(run.run_id)


def check_evaluations(instance: dg.DagsterInstance, run_id: str, check_name: str) -> list:
    """The evaluations of the asset check ``check_name`` in run ``run_id``."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    evaluations = [record.event_log_entry.dagster_event.event_specific_data for record in records]
    return [evaluation for evaluation in evaluations if evaluation.check_name == check_name]


def materialized(instance: dg.DagsterInstance, run_id: str) -> set[dg.AssetKey]:
    """The assets run ``run_id`` materialised."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    return {record.event_log_entry.dagster_event.asset_key for record in records}
