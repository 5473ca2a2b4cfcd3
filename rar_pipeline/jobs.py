"""Jobs. ``main`` materialises every unpartitioned asset: the README's main job."""

import dagster as dg

main_job = dg.define_asset_job(
    "main",
    selection=dg.AssetSelection.all(),
    description="Materialise the whole pipeline on the current profile (the README's main job).",
)

JOBS = [main_job]
