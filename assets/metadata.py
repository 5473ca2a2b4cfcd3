"""Metadata helpers shared by the assets and checks: a frame's column schema, and the metadata of an
asset's latest materialisations (what checks and sensors compare a new run against)."""

from typing import Any

import dagster as dg


def table_schema(frame) -> dg.TableSchema:
    """The ``dagster/column_schema`` of a polars frame: column names and dtypes."""
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()])


def recent_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, limit: int = 1) -> list[dict[str, Any]]:
    """The metadata of the latest ``limit`` materialisations of ``key``, newest first, as plain values."""
    records = instance.fetch_materializations(key, limit=limit).records
    return [
        {name: value.value for name, value in record.asset_materialization.metadata.items()}
        for record in records if record.asset_materialization is not None
    ]


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, Any]:
    """The metadata of the latest materialisation of ``key`` as plain values ({} when there is none)."""
    recent = recent_metadata(instance, key)
    return recent[0] if recent else {}
