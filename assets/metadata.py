"""Metadata helpers shared by the assets and checks: a table's column schema, and the metadata of an
asset's latest materialisations (what checks and sensors compare a new run against)."""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg


def table_schema(columns: Mapping[str, object], descriptions: Mapping[str, str]) -> dg.TableSchema:
    """The ``dagster/column_schema`` of a table: column names, types (a polars ``frame.schema`` or name ->
    pyarrow type) and what each column means (``descriptions``, from ``corpus_build.schema``)."""
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype), description=descriptions.get(name))
                                   for name, dtype in columns.items()])


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


SIGNIFICANT_DIGITS = 4  # what a person reads and what the Plots tab needs (0.0029806259 -> 0.002981)


def readable(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata as a person reads it: floats rounded to SIGNIFICANT_DIGITS significant digits and whole ones
    shown as integers (a count of 671.0 is 671), inside JSON values too; entries that are None are dropped.
    Ints and floats both feed the UI's Plots tab."""
    return {key: _readable(value) for key, value in metadata.items() if value is not None}


def _readable(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            return value
        return int(value) if value.is_integer() and abs(value) < 2**53 else float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, dg.JsonMetadataValue):
        return dg.MetadataValue.json(_readable(value.data))
    if type(value) is dict:  # plain containers only: Dagster's metadata records are tuples too
        return {key: _readable(item) for key, item in value.items()}
    if type(value) in (list, tuple):
        return [_readable(item) for item in value]
    return value


def records_table(rows: Sequence[Mapping[str, Any]]) -> dg.TableMetadataValue:
    """One table entry for figures that would otherwise need a key per row (per source, per dataset x
    system): the UI shows it as a table with readable numbers. Columns: every key, in first-seen order."""
    rows = [readable(row) for row in rows]
    columns = list(dict.fromkeys(name for row in rows for name in row))
    kinds = {name: _column_type([row.get(name) for row in rows]) for name in columns}
    return dg.MetadataValue.table(
        records=[dg.TableRecord({name: row.get(name) for name in columns}) for row in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(name, kinds[name]) for name in columns]),
    )


def _column_type(values: Sequence[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "float"
    return "string"
