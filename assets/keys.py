"""Every asset key of the pipeline and who owns them, declared once (the names are part of the interface:
DESIGN.md's asset graph). Asset modules, jobs, sensors and the CLI refer to these constants."""

import dagster as dg

OWNERS = ["team:rar"]

CORPUS = dg.AssetKey("movie_corpus")
CORPUS_QUARANTINE = dg.AssetKey("movie_corpus_quarantine")
VECTORS = dg.AssetKey("movie_vectors")
SEQUENCES = dg.AssetKey("user_sequences")
TURNS = dg.AssetKey("conversation_turns")
PRETRAINED = dg.AssetKey("lrurec_pretrained")
SFT = dg.AssetKey("lrurec_sft")
DIALOGUE = dg.AssetKey("dialogue_retriever")
ALIGNMENT_ROUND = dg.AssetKey("alignment_round")
ALIGNED = dg.AssetKey("aligned_retriever")
REPORT = dg.AssetKey("evaluation_report")


def raw_key(source: str) -> dg.AssetKey:
    """The key of the asset that fetches one upstream source (``raw_<source>``)."""
    return dg.AssetKey(f"raw_{source}")
