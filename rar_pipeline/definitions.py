"""The code location: every asset and check of ``assets/``, plus jobs, schedules, sensors, resources."""

import dagster as dg

import assets
from rar_pipeline.jobs import JOBS
from rar_pipeline.resources import RESOURCES
from rar_pipeline.schedules import SCHEDULES
from rar_pipeline.sensors import SENSORS

defs = dg.Definitions(
    assets=dg.load_assets_from_package_module(assets),
    asset_checks=dg.load_asset_checks_from_package_module(assets),
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources=RESOURCES,
)
