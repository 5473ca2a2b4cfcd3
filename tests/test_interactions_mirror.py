"""The interaction readers on the real datasets of ../shared/data, linked to a MovieLens stand-in corpus."""

from __future__ import annotations

import polars as pl
import pytest

from corpus_build.interactions import redial, splits
from corpus_build.interactions.build import build_conversation_turns, build_user_sequences
from corpus_build.interactions.crs_check import cross_check
from corpus_build.interactions.dev_corpus import dev_corpus
from corpus_build.linking import Linker, LinkLog
from corpus_build.schema import CONVERSATION_TURNS_SCHEMA
from rar_pipeline.settings import get_settings

pytestmark = [pytest.mark.slow, pytest.mark.mirror]


@pytest.fixture(scope="module")
def linker(tmp_path_factory):
    from conftest import SHARED_DATA  # the same folder as the shared_data fixture (module scope here)

    if not SHARED_DATA.is_dir():
        pytest.skip(f"third-party datasets not found at {SHARED_DATA}")
    return Linker.from_parquet(dev_corpus(SHARED_DATA, tmp_path_factory.mktemp("corpus") / "movie_corpus.parquet"))


def test_mirror_link_rates_and_turn_counts(mirror_home, linker):
    settings = get_settings()
    sequences = build_user_sequences(settings.profile, settings.upstream, linker)
    rates = sequences.log.rates()
    assert rates["ml-latest-small"] >= 0.98 and rates["ml-1m"] >= 0.98 and rates["ml-100k"] >= 0.95
    users = dict(sequences.frame.group_by("dataset").len().iter_rows())
    assert users["ml-latest-small"] == 610 and users["ml-100k"] == 943 and users["ml-1m"] >= 6030
    assert users["ml-25m-head"] == 756 and rates["ml-25m-head"] >= 0.98  # 757 users, the cut-off last one left out
    turns = build_conversation_turns(settings.profile, settings.upstream, linker, settings.seed)
    rates = turns.log.rates()
    assert rates["redial_test"] >= 0.95 and rates["redial_validation"] >= 0.95 and rates["redial_train"] >= 0.95
    assert rates["inspired_validation"] >= 0.85 and rates["inspired_train"] >= 0.83  # UniCRS's DBpedia film links
    counts = dict(((d, s), n) for d, s, n in turns.frame.group_by("dataset", "split").len().iter_rows())
    assert counts[("redial", "test")] > 3000 and counts[("redial", "validation")] > 2000
    assert counts[("redial", "train")] > 3500 and counts[("inspired", "train")] > 1700
    assert counts[("inspired", "validation")] > 200
    dialogs = dict(((d, s), n) for d, s, n in turns.frame.group_by("dataset", "split")
                   .agg(pl.col("dialog_id").n_unique()).iter_rows())
    # 2,270 distinct ReDial train-split dialogues: 901 in KGSF's validation file, the other 1,369 train
    assert 1300 <= dialogs[("redial", "train")] <= 1369 and dialogs[("inspired", "train")] > 700
    # CFCRS's sample repeats 88 validation and 43 train_subset500 dialogues (a few recommend nothing)
    assert 120 <= turns.stats["duplicates_removed/redial/cfcrs_train_sample1000.jsonl"] <= 131
    assert turns.stats["duplicates_removed/inspired/train_unicrs.jsonl"] == 0  # no dev dialogue in train
    assert splits.overlapping_dialogs(turns.frame).is_empty()
    assert turns.quarantine.is_empty()


def test_crs_cross_check(shared_data, linker):
    path = shared_data / "redial/test_data.jsonl"
    frames = {rule: pl.DataFrame(redial.read_redial(path, "test", linker, LinkLog(), rule=rule)[0],
                                 schema=CONVERSATION_TURNS_SCHEMA) for rule in ("suggested", "mentioned")}
    harness_rule = cross_check(shared_data, frames["mentioned"], frames["mentioned"], linker)
    assert harness_rule["their_turns"] == 3552 and harness_rule["paired"] > 3400
    assert harness_rule["agreement"] >= 0.95
    default_rule = cross_check(shared_data, frames["suggested"], frames["mentioned"], linker)
    assert default_rule["agreement"] >= 0.90
    assert default_rule["disagreement_kinds"]["mentioned by the recommender but not marked suggested"] > 0
