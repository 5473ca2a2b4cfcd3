"""Jobs. ``main`` materialises every unpartitioned asset: the README's main job."""

import dagster as dg

main_job = dg.define_asset_job(
    "main",
    selection=dg.AssetSelection.all(),
    description="Materialise the whole pipeline on the current profile (the README's main job).",
)

# Corpus refresh (issue 3): the raw sources, movie_corpus (with the outputs built alongside it) and
# movie_vectors; incremental, so an unchanged upstream costs little. Run by the new-release sensor and
# the weekly schedule.
corpus_refresh_job = dg.define_asset_job(
    "corpus_refresh",
    selection=dg.AssetSelection.assets("movie_vectors").upstream().required_multi_asset_neighbors(),
    description="Re-fetch the upstream sources, rebuild movie_corpus and embed only the films that changed.",
)

JOBS = [main_job, corpus_refresh_job]
