"""lrurec_pretrained and lrurec_sft through dg.materialize on a CI-sized dataset, and the Retriever."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from corpus_build.schema import CONVERSATION_TURNS_SCHEMA, CORPUS_SCHEMA, USER_SEQUENCES_SCHEMA

torch.set_num_threads(1)
NUM_FILMS, USERS, ML_100K_USERS = 60, 300, 100


def _movie_id(i: int) -> str:
    return f"tt{i:07d}"


def _write_tables(settings, with_vectors: bool) -> None:
    rng = np.random.default_rng(0)
    corpus = pl.DataFrame(
        {"movie_id": [_movie_id(i) for i in range(1, NUM_FILMS + 1)], "title": [f"Film {i}" for i in range(1, NUM_FILMS + 1)]}
    ).with_columns(
        [pl.lit(None, dtype=t).alias(c) for c, t in CORPUS_SCHEMA.items() if c not in ("movie_id", "title")]
    ).select(list(CORPUS_SCHEMA))
    corpus.write_parquet(settings.table_path("movie_corpus"))
    rows = []
    for user in range(USERS):  # users walk the film cycle in steps of 1 from a random start
        start = int(rng.integers(0, NUM_FILMS))
        films = [_movie_id((start + t) % NUM_FILMS + 1) for t in range(int(rng.integers(6, 15)))]
        # two MovieLens datasets whose user ids overlap: a user id is only unique within its dataset
        dataset, user_id = ("ml-latest-small", user) if user < USERS - ML_100K_USERS else ("ml-100k", user - USERS + ML_100K_USERS)
        rows.append({"dataset": dataset, "user_id": str(user_id), "movie_ids": films,
                     "train_movie_ids": films[:-2], "val_movie_id": films[-2], "test_movie_id": films[-1]})
    pl.DataFrame(rows, schema=USER_SEQUENCES_SCHEMA).write_parquet(settings.table_path("user_sequences"))
    turns = []
    for i in range(90):
        start = int(rng.integers(0, NUM_FILMS))
        history = [_movie_id((start + t) % NUM_FILMS + 1) for t in range(3)]
        target = [_movie_id((start + 3) % NUM_FILMS + 1)]
        turns.append({"dataset": "movielens_synthetic", "split": ["train", "validation", "test"][i % 3],
                      "dialog_id": str(i), "turn_index": 1, "context": [], "history_movie_ids": history if i % 10 else [],
                      "target_movie_ids": target, "target_mentioned_before": [False]})
    pl.DataFrame(turns, schema=CONVERSATION_TURNS_SCHEMA).write_parquet(settings.table_path("conversation_turns"))
    if with_vectors:
        import pyarrow as pa

        from corpus_build.vector_store import VectorStore, table_schema

        dim = 16
        vectors = rng.normal(size=(NUM_FILMS, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store = VectorStore(settings.vector_db_uri)
        store.create(dim)
        data = {"movie_id": corpus["movie_id"].to_list(), "vector": list(vectors), "content_hash": ["h"] * NUM_FILMS,
                "model": ["test"] * NUM_FILMS, "title": corpus["title"].to_list(), "year": [None] * NUM_FILMS,
                "genres": [[]] * NUM_FILMS, "directors": [[]] * NUM_FILMS, "cast": [[]] * NUM_FILMS, "plot": [None] * NUM_FILMS}
        store.upsert(pa.Table.from_pydict(data, schema=table_schema(dim)))


@pytest.mark.slow
@pytest.mark.parametrize("text_init", [True, False])
def test_retriever_group_materialises_and_retrieves(rar_home, monkeypatch, text_init):
    import dagster as dg

    import assets.retriever as retriever_assets
    from assets.retriever import lrurec_pretrained, lrurec_sft
    from rar_pipeline.settings import get_settings
    from training.retriever import Retriever

    monkeypatch.setenv("RAR_RETRIEVER_EPOCHS", "1")
    monkeypatch.setenv("RAR_RETRIEVER_SFT_EPOCHS", "1")
    monkeypatch.setenv("RAR_RETRIEVER_MAX_LEN", "20")
    monkeypatch.setenv("RAR_RETRIEVER_THREADS", "1")
    monkeypatch.setenv("RAR_RETRIEVER_TEXT_INIT", str(text_init).lower())
    get_settings.cache_clear()
    settings = get_settings()
    _write_tables(settings, with_vectors=text_init)

    checks = [retriever_assets.pretrained_checkpoint_sound, retriever_assets.sft_checkpoint_sound,
              retriever_assets.pretrained_validation_above_chance, retriever_assets.sft_validation_above_chance]
    result = dg.materialize([lrurec_pretrained, lrurec_sft, *checks])
    assert result.success
    assert [(e.asset_key.to_user_string(), e.check_name, e.passed) for e in result.get_asset_check_evaluations()
            if not e.passed] == []
    assert len(result.get_asset_check_evaluations()) == 4
    pre = result.asset_materializations_for_node("lrurec_pretrained")[0].metadata
    sft = result.asset_materializations_for_node("lrurec_sft")[0].metadata
    assert pre["text_init"].value is text_init
    assert pre["users"].value == USERS and "dagster/row_count" not in pre  # a checkpoint has no rows
    by_dataset = {r.data["dataset"]: r.data for r in pre["by_dataset"].records}
    assert by_dataset["ml-100k"]["users"] == ML_100K_USERS and by_dataset["ml-latest-small"]["users"] == USERS - ML_100K_USERS
    assert 0 <= by_dataset["ml-100k"]["test NDCG@10"] <= 1 and pre["dataset"].value == "ml-100k,ml-latest-small"
    coverage = {r.data["turns"]: r.data["share_in_histories"] for r in pre["target_coverage"].records}
    assert 0 < coverage["movielens_synthetic/test"] <= 1
    assert pre["items"].value == NUM_FILMS and sft["items"].value == NUM_FILMS
    assert 0 <= pre["test/NDCG@10"].value <= 1 and 0 <= sft["val/Recall@10"].value <= 1
    # SFT learns from the SFT fold of the train/validation turns (not the gate, not the rounds' RL fold);
    # every 10th turn has no history.
    learning = [i for i in range(90) if i % 3 != 2 and settings.learning_folds().fold_of(str(i)) == "sft_train"]
    assert sft["skipped_turns_without_history"].value == sum(1 for i in learning if i % 10 == 0)
    assert sft["training_examples"].value == sum(1 for i in learning if i % 10)

    retriever = Retriever.from_checkpoint(settings.path("retriever", "sft", "retriever.pt"))
    history = [_movie_id(5), _movie_id(6), "tt9999999"]  # an unknown film is ignored
    top = retriever.retrieve(history, k=10, exclude=[_movie_id(7)])
    ids = [movie_id for movie_id, _ in top]
    assert len(ids) == 10 and not {_movie_id(5), _movie_id(6), _movie_id(7)} & set(ids)
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    assert retriever.scores([history, []]).shape == (2, NUM_FILMS)
    assert len(retriever.retrieve_batch([history, []], k=3)) == 2


@pytest.mark.parametrize("negatives", [0, 5])
def test_sft_uses_the_full_softmax_above_the_pretraining_cap(rar_home, tmp_path, negatives):
    """SFT scores one position per example, so it keeps the full softmax where pretraining would sample."""
    from rar_pipeline.settings import get_settings
    from training.finetuning import finetune_from_turns
    from training.fit import TrainConfig
    from training.lrurec import LRURec, LRURecConfig
    from training.retriever import export_retriever

    settings = get_settings()
    _write_tables(settings, with_vectors=False)
    torch.manual_seed(0)
    parent = export_retriever(LRURec(LRURecConfig(num_items=NUM_FILMS, hidden=16, blocks=1)),
                              [_movie_id(i) for i in range(1, NUM_FILMS + 1)], tmp_path / "parent.pt", max_len=20)
    config = TrainConfig(max_len=20, epochs=1, threads=1, progress=False, negatives=negatives,
                         full_softmax_max_items=NUM_FILMS // 2)  # pretraining would sample above 30 films
    out = finetune_from_turns(settings.table_path("conversation_turns"), parent, tmp_path / "sft", config)
    assert out["full_softmax"] is (negatives == 0)
    assert out["iterations"] > 0


def test_retriever_checks_fail_on_a_broken_checkpoint_and_a_chance_level_retriever(rar_home):
    import dagster as dg

    import assets.retriever as retriever_assets
    from rar_pipeline.settings import get_settings
    from training.layout import checkpoint_path
    from training.lrurec import LRURec, LRURecConfig
    from training.retriever import export_retriever

    check = retriever_assets.sft_checkpoint_sound
    assert "does not exist" in check().metadata["problems"].value[0]
    path = checkpoint_path(get_settings().home, "sft")
    model = LRURec(LRURecConfig(num_items=NUM_FILMS, hidden=16, blocks=1))
    export_retriever(model, [_movie_id(i) for i in range(1, NUM_FILMS + 1)], path, max_len=20)
    assert check().passed
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    export_retriever(model, [_movie_id(i) for i in range(1, NUM_FILMS + 1)], path, max_len=20)
    broken = check()
    assert not broken.passed and "not finite" in broken.metadata["problems"].value[0]

    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_asset_check_context(instance=instance)
    floor = retriever_assets.CHANCE_MULTIPLE * 10 / 1000
    for recall, passed in ((floor * 0.9, False), (floor, True), (0.2, True)):
        instance.report_runless_asset_event(dg.AssetMaterialization("lrurec_sft", metadata={"val/Recall@10": recall, "items": 1000}))
        assert retriever_assets.sft_validation_above_chance(context).passed is passed
