"""Corpus building as a plain library (no Dagster): sources, fetch, normalise, merge, linking, vectors."""
