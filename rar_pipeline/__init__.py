"""rar-pipeline: the Dagster code location (definitions, settings, resources, CLI)."""
