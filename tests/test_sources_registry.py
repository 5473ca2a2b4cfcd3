"""Registry and the real mirror (../shared/data): fetch through RAR_SOURCE_MIRROR, then read."""

from __future__ import annotations

import pytest

from corpus_build.fetch import fetch_source
from corpus_build.sources.registry import SOURCES, source_files_present, sources_for_profile
from rar_pipeline.settings import get_settings


def test_profiles():
    assert [s.name for s in sources_for_profile("sample")] == ["wikidata_sample"]
    assert [s.name for s in sources_for_profile("full")] == [
        "imdb", "wikipedia", "movielens", "movielens_small", "movielens_1m"]
    with pytest.raises(ValueError, match="unknown profile"):
        sources_for_profile("huge")
    for spec in SOURCES.values():
        assert spec.files and spec.description
        assert all(f.url or f.package_resource for f in spec.files)
    assert all(f.optional and f.mirror_path.startswith("imdb/") for f in SOURCES["imdb"].files)


def test_sample_profile_fetches_from_the_package(rar_home):
    settings = get_settings()
    spec = SOURCES["wikidata_sample"]
    assert source_files_present(spec, settings.source_mirror)
    [fetched] = fetch_source(spec, settings.upstream, progress=False)
    result = spec.reader({fetched.name: fetched.path})
    assert result.rows.height >= 15_000


@pytest.mark.mirror
def test_mirror_skips_imdb_and_lists_the_rest(mirror_home, shared_data):
    settings = get_settings()
    assert not source_files_present(SOURCES["imdb"], settings.source_mirror)
    assert fetch_source(SOURCES["imdb"], settings.upstream, progress=False) == []  # optional files: skipped
    assert [s.name for s in sources_for_profile("full", shared_data)] == [
        "wikipedia", "movielens", "movielens_small", "movielens_1m"]


def test_a_mirror_with_imdb_dumps_serves_them(rar_home, tmp_path, monkeypatch):
    from imdb_fixtures import MOVIE_TCONSTS, write_imdb_fixtures

    write_imdb_fixtures(tmp_path / "mirror" / "imdb", malformed=False)
    monkeypatch.setenv("RAR_SOURCE_MIRROR", str(tmp_path / "mirror"))
    get_settings.cache_clear()
    spec = SOURCES["imdb"]
    assert source_files_present(spec, get_settings().source_mirror)
    fetched = fetch_source(spec, get_settings().upstream, progress=False)
    assert len(fetched) == 5 and {f.origin for f in fetched} == {"mirror"}
    assert spec.reader({f.name: f.path for f in fetched}).rows.height == len(MOVIE_TCONSTS)


@pytest.mark.mirror
@pytest.mark.parametrize(("name", "films", "with_imdb"), [
    ("wikipedia", 36_273, 0),
    ("movielens", 62_423, 62_423),
    ("movielens_small", 9_742, 9_742),
    ("movielens_1m", 3_883, 0),
])
def test_mirror_sources_read_with_sane_counts(mirror_home, name, films, with_imdb):
    settings = get_settings()
    spec = SOURCES[name]
    assert source_files_present(spec, settings.source_mirror)
    fetched = fetch_source(spec, settings.upstream, progress=False)
    assert {f.origin for f in fetched} == {"mirror"} and len(fetched) == len(spec.files)
    result = spec.reader({f.name: f.path for f in fetched})
    assert result.rows.height == films and result.quarantine.height == 0
    assert result.rows["imdb_id"].is_not_null().sum() == with_imdb
    assert set(result.rows["source"]) == {name}
    assert result.rows["title"].str.len_chars().min() > 0
    years = result.rows["year"].drop_nulls()
    assert years.min() >= 1874 and years.max() <= 2030
