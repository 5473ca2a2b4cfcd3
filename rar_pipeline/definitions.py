"""The code location: every asset and check of ``assets/``, plus jobs, schedules, sensors, resources, and
the executor that ``RAR_EXECUTOR`` names (``rar_pipeline.execution``).

Assets carry links to their source code: the local file and line (Dagster's code references) and, when a
Dagster+ build sets DAGSTER_CLOUD_GIT_URL and DAGSTER_CLOUD_GIT_SHA, the same lines in the repository."""

import os
import warnings
from pathlib import Path

import dagster as dg

import assets
from rar_pipeline.execution import executor
from rar_pipeline.jobs import JOBS
from rar_pipeline.resources import RESOURCES
from rar_pipeline.schedules import SCHEDULES
from rar_pipeline.sensors import SENSORS

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def with_code_links(assets_defs: list) -> list:
    """``assets_defs`` with code references to their source, linked to git when a Dagster+ build says where."""
    with warnings.catch_warnings():  # code references are a beta feature of Dagster 1.13: the warnings are noise here
        warnings.simplefilter("ignore", dg.BetaWarning)
        linked = dg.with_source_code_references(assets_defs)
    git_url, git_sha = os.environ.get("DAGSTER_CLOUD_GIT_URL"), os.environ.get("DAGSTER_CLOUD_GIT_SHA")
    if git_url and git_sha:
        mapping = dg.AnchorBasedFilePathMapping(local_file_anchor=REPOSITORY_ROOT, file_anchor_path_in_repository="")
        linked = dg.link_code_references_to_git(linked, git_url=git_url, git_branch=git_sha, file_path_mapping=mapping)
    return linked


defs = dg.Definitions(
    assets=with_code_links(dg.load_assets_from_package_module(assets)),
    asset_checks=dg.load_asset_checks_from_package_module(assets),
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources=RESOURCES,
    executor=executor(),
)


def resolved_job(name: str) -> dg.JobDefinition:
    """The job ``name`` of these definitions, resolved: how ``rar materialize`` rebuilds it in every
    step process (``dg.build_reconstructable_job``)."""
    return defs.resolve_job_def(name)
