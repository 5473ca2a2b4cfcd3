"""Dagster assets and checks, one module per pipeline stage (a table of contents of the pipeline).

Each asset is thin: it calls one function of ``corpus_build`` or ``training`` and reports metadata.
Modules here are loaded automatically by ``rar_pipeline.definitions``.
"""
