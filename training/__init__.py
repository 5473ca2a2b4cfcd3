"""Training as a plain library (no Dagster): LRURec, sequences, pretraining, generator, alignment, metrics."""
