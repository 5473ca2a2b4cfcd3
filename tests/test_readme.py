"""The README stays a user's page: every setting documented, every link to docs/ alive, short."""

from __future__ import annotations

import re
from pathlib import Path

from rar_pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented():
    variables = [f"RAR_{name.upper()}" for name in Settings.model_fields] + ["RAR_GENERATOR_API_KEY"]
    missing = [v for v in variables if f"`{v}`" not in README]
    assert not missing, f"README.md does not document {missing}"


def test_links_to_docs_exist_and_the_readme_stays_short():
    links = re.findall(r"\]\(((?:docs/)[^)#]+)", README)
    assert links, "README.md links no docs page"
    assert [link for link in links if not (REPO / link).is_file()] == []
    for page in (REPO / "docs").glob("*.md"):
        for link in re.findall(r"\]\(([^)#:]+\.md)", page.read_text(encoding="utf-8")):
            assert (page.parent / link).is_file(), f"{page.name} links {link}, which does not exist"
    assert len(README.splitlines()) <= 250


def test_ci_runs_the_readmes_test_command():
    """CI runs the suite exactly as the README tells a user to (the same workers, the same distribution)."""
    [readme_command] = re.findall(r"(?m)^\. \.venv/bin/activate && (python -m pytest.*)$", README)
    ci_commands = re.findall(r"(?m)^(python -m pytest.*)$", (REPO / ".ci" / "run").read_text(encoding="utf-8"))
    assert ci_commands == [readme_command]
