"""Dagster resources shared by the assets."""

RESOURCES: dict = {}
