"""What the Dagster UI shows as text: descriptions render as written (the UI renders them as Markdown, so a
`<round>` outside a code span is swallowed as an HTML tag and a stray `*` or `_` pair turns into italics)."""

from __future__ import annotations

import re

import pytest
from markdown_it import MarkdownIt

from rar_pipeline.definitions import defs

_MARKDOWN = MarkdownIt("commonmark", {"html": True})
_LOST_IN_RENDERING = {"html_inline", "html_block", "em_open", "strong_open"}
_SPHINX_ROLE = re.compile(r":[a-z]+:`")  # :func:`name` is docstring markup, shown raw by the UI


def markdown_problems(text: str | None) -> list[str]:
    """Pieces of ``text`` that the UI would not show as written: HTML tags, emphasis, Sphinx roles."""
    problems = [f"Sphinx role {role}" for role in _SPHINX_ROLE.findall(text or "")]
    for block in _MARKDOWN.parse(text or ""):
        for token in [block, *(block.children or [])]:
            if token.type in _LOST_IN_RENDERING:
                problems.append(f"{token.type}: {token.content or token.markup}")
    return problems


def _ui_descriptions() -> dict[str, str | None]:
    """Every description the UI renders: assets, checks, jobs, schedules, sensors and resources."""
    graph = defs.resolve_asset_graph()
    texts = {f"asset {key.to_user_string()}": graph.get(key).description for key in graph.get_all_asset_keys()}
    for assets_def in graph.assets_defs:
        texts |= {f"check {spec.key.to_user_string()}": spec.description for spec in assets_def.check_specs}
    texts |= {f"job {job.name}": job.description for job in defs.jobs}
    texts |= {f"schedule/sensor {item.name}": item.description for item in [*defs.schedules, *defs.sensors]}
    for name, resource in defs.resources.items():
        resource_def = resource.get_resource_definition()
        texts[f"resource {name}"] = resource_def.description
        for field, spec in resource_def.config_schema.as_field().config_type.fields.items():
            texts[f"resource {name}.{field}"] = spec.description
    return texts


def test_the_markdown_check_sees_what_the_ui_would_eat():
    assert markdown_problems("Outputs $RAR_HOME/alignment/rounds/<round>/ (retriever.pt)")
    assert markdown_problems("at most turns*G*K requests")
    assert markdown_problems("the key arrives through dg.EnvVar (see :func:`generator_api_key`)")
    assert not markdown_problems("Outputs `$RAR_HOME/alignment/rounds/<round>/`; RAR_GENERATOR_API_KEY; 5 * 3")


@pytest.mark.parametrize("where, text", sorted(_ui_descriptions().items()))
def test_descriptions_render_as_written(where, text):
    assert not markdown_problems(text), f"{where}: {markdown_problems(text)}"


def test_every_table_column_is_described():
    """The UI's column descriptions come from corpus_build.schema: one description per column of each table."""
    from corpus_build import schema
    from corpus_build.vector_store import table_schema

    tables = {
        "movie_corpus": (schema.CORPUS_SCHEMA, schema.CORPUS_COLUMN_DESCRIPTIONS),
        "movie_corpus_quarantine": (schema.QUARANTINE_SCHEMA, schema.QUARANTINE_COLUMN_DESCRIPTIONS),
        "user_sequences": (schema.USER_SEQUENCES_SCHEMA, schema.USER_SEQUENCES_COLUMN_DESCRIPTIONS),
        "conversation_turns": (schema.CONVERSATION_TURNS_SCHEMA, schema.CONVERSATION_TURNS_COLUMN_DESCRIPTIONS),
        "movie_vectors": (dict.fromkeys(table_schema(8).names), schema.VECTORS_COLUMN_DESCRIPTIONS),
    }
    for table, (columns, descriptions) in tables.items():
        assert list(descriptions) == list(columns), table
        for column, text in descriptions.items():
            assert text.strip() and not markdown_problems(text), f"{table}.{column}: {text!r}"


def test_the_generator_resource_shows_the_settings_in_effect(monkeypatch):
    from rar_pipeline.resources import GeneratorResource
    from rar_pipeline.settings import get_settings

    assert defs.resources["generator"].backend == get_settings().generator_backend  # loaded with today's settings
    monkeypatch.setenv("RAR_GENERATOR_BACKEND", "openai")
    monkeypatch.setenv("RAR_GENERATOR_MODEL", "gpt-test")
    get_settings.cache_clear()
    try:
        resource = GeneratorResource.from_settings()
    finally:
        get_settings.cache_clear()
    assert (resource.backend, resource.model) == ("openai", "gpt-test")


def test_metadata_numbers_are_rounded_for_people():
    import dagster as dg

    from assets.metadata import readable, records_table

    shown = readable({"ndcg": 0.0029806259314456036, "seconds": 61.379688493, "films": 671.0, "gone": None,
                      "nested": {"rates": [0.123456789, 2.0]}, "json": dg.MetadataValue.json({"r": 0.98765432}),
                      "flag": True, "nan": float("nan")})
    assert shown["ndcg"] == 0.002981 and shown["seconds"] == 61.38 and shown["films"] == 671
    assert isinstance(shown["films"], int) and "gone" not in shown and shown["flag"] is True
    assert shown["nested"] == {"rates": [0.1235, 2]} and shown["json"].data == {"r": 0.9877}
    table = records_table([{"dataset": "a", "users": 3.0, "rate": 0.123456}, {"dataset": "b", "extra": "x"}])
    assert [c.name for c in table.schema.columns] == ["dataset", "users", "rate", "extra"]
    assert [c.type for c in table.schema.columns] == ["string", "int", "float", "string"]
    assert table.records[0].data == {"dataset": "a", "users": 3, "rate": 0.1235, "extra": None}
