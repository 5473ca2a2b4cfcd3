"""Jobs. ``main`` materialises every asset, one new alignment round included (the README's main job)."""

import dagster as dg

main_job = dg.define_asset_job(
    "main",
    selection=dg.AssetSelection.all(),
    description="Materialise the whole pipeline on the current profile, with one alignment round (the "
    "partition). `rar materialize` adds the round and runs it (the README's main job).",
)

# Nightly alignment: a new round, the promotion gate (aligned_retriever promotes the round only if it passed),
# then the report.
nightly_alignment_job = dg.define_asset_job(
    "nightly_alignment",
    selection=dg.AssetSelection.assets("alignment_round", "aligned_retriever", "evaluation_report"),
    description="One RL alignment round -> promotion gate -> evaluation report.",
)

evaluation_job = dg.define_asset_job(
    "evaluation", selection=dg.AssetSelection.assets("evaluation_report"),
    description="Rebuild the evaluation report over every system that exists.",
)

# Corpus refresh: the raw sources, movie_corpus with its quarantine, and movie_vectors; incremental, so
# an unchanged upstream costs little. Run by the new-release sensor and the weekly schedule.
corpus_refresh_job = dg.define_asset_job(
    "corpus_refresh",
    selection=dg.AssetSelection.assets("movie_vectors").upstream() | dg.AssetSelection.assets("movie_corpus_quarantine"),
    description="Re-fetch the upstream sources, rebuild movie_corpus and embed only the films that changed.",
)

JOBS = [main_job, nightly_alignment_job, evaluation_job, corpus_refresh_job]
