"""Retriever stage: LRURec pretrained on user histories, fine-tuned on conversation turns (the paper's
history-only retriever), and the dialogue-aware retriever that also reads the conversation."""

import dagster as dg

from assets.keys import CORPUS, DIALOGUE, OWNERS, PRETRAINED, SEQUENCES, SFT, TURNS, VECTORS
from assets.metadata import latest_metadata, readable, records_table
from rar_pipeline.execution import gpu_step_tags
from rar_pipeline.settings import get_settings

GROUP = "retriever"
PER_DATASET_METRICS = ("NDCG@10", "Recall@10")  # per MovieLens dataset in lrurec_pretrained's metadata


def _train_config(epochs: int):
    from training.fit import TrainConfig

    s = get_settings()
    return TrainConfig(
        max_len=s.retriever_max_len, batch_size=s.retriever_batch_size, epochs=epochs,
        patience=s.retriever_patience, seed=s.seed, device=s.retriever_device, negatives=s.retriever_negatives,
        sampler=s.retriever_sampler, threads=s.retriever_threads, progress=False,
        max_minutes=s.retriever_minutes,
    )


def _vector_loader(context):
    """movie_ids -> text vectors from LanceDB, or None (random item init) when off or unavailable."""
    settings = get_settings()
    if not settings.retriever_text_init:
        return None
    from corpus_build.vector_store import VectorStore

    store = VectorStore(settings.vector_db_uri)
    if not store.exists():
        context.log.warning("movie_vectors not found: items initialised at random")
        return None
    return store.load_vectors


def _metrics(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}/{name}": value for name, value in metrics.items()}


@dg.asset(key=PRETRAINED, group_name=GROUP, kinds={"pytorch"}, owners=OWNERS, deps=[SEQUENCES, TURNS, CORPUS, VECTORS],
          op_tags=gpu_step_tags())
def lrurec_pretrained(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """LRURec (2 LRU blocks, tied item table over the whole corpus) pretrained on every MovieLens history
    of user_sequences (RAR_RETRIEVER_PRETRAIN_DATASETS narrows them; users kept apart per dataset) with
    next-item full-ranking validation and early stopping on Recall@10; items start from movie_vectors
    through a learned projection. Metadata: users, interactions and test metrics per dataset (by_dataset), and
    target_coverage: the share of each conversation set's targets that the histories contain.
    Checkpoint: $RAR_HOME/retriever/pretrained/retriever.pt."""
    from training.layout import system_dir
    from training.pretraining import pretrain_from_tables

    s = get_settings()
    turns = s.table_path("conversation_turns")
    if not turns.is_file():
        context.log.warning(f"{turns} not found: no target coverage in the metadata")
    out = pretrain_from_tables(
        s.table_path("user_sequences"), s.table_path("movie_corpus"), system_dir(s.home, "pretrained"),
        _train_config(s.pretraining_epochs), hidden=s.retriever_hidden,
        load_vectors=_vector_loader(context), datasets=s.retriever_pretrain_datasets,
        turns_path=turns if turns.is_file() else None, log=context.log.info,
    )
    by_dataset = [
        {"dataset": d, "users": n, "interactions": out["interactions_by_dataset"].get(d),
         **{f"test {m}": out["test_by_dataset"].get(d, {}).get(m) for m in PER_DATASET_METRICS}}
        for d, n in out["users_by_dataset"].items()
    ]
    return dg.MaterializeResult(
        metadata=readable({
            "users": out["users"],
            "checkpoint": dg.MetadataValue.path(str(out["checkpoint"])),
            "checkpoint_dir": dg.MetadataValue.path(str(out["checkpoint_dir"])),
            "dataset": out["dataset"], "text_init": out["text_init"], "full_softmax": out["full_softmax"],
            "items": out["items"], "training_examples": out["training_examples"],
            "epochs_run": out["epochs_run"], "iterations": out["iterations"],
            "seconds_per_epoch": out["seconds_per_epoch"],
            **_metrics("val", out["val"]), **_metrics("test", out["test"]),
            "by_dataset": records_table(by_dataset),
            "target_coverage": records_table([{"turns": name, "share_in_histories": share}
                                              for name, share in (out["coverage"] or {}).items()]),
        })
    )


@dg.asset(key=SFT, group_name=GROUP, kinds={"pytorch"}, owners=OWNERS, deps=[PRETRAINED, TURNS], op_tags=gpu_step_tags())
def lrurec_sft(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """lrurec_pretrained fine-tuned on the SFT fold of the learning dialogues (train/validation turns of
    RAR_ALIGNMENT_DATASETS outside the gate slice and the rounds' RL fold, RAR_ALIGNMENT_RL_SHARE;
    history = films mentioned so far, target = each recommended film), validated on its own slice of
    that fold: the SFT-only retriever the rounds start from.
    Checkpoint: $RAR_HOME/retriever/sft/retriever.pt."""
    from training.finetuning import finetune_from_turns
    from training.layout import checkpoint_path, system_dir

    s = get_settings()
    pretrained = checkpoint_path(s.home, "pretrained")
    if not pretrained.is_file():
        raise dg.Failure(f"{pretrained} not found: materialise lrurec_pretrained first")
    out = finetune_from_turns(
        s.table_path("conversation_turns"), pretrained, system_dir(s.home, "sft"),
        _train_config(s.sft_epochs), log=context.log.info,
        datasets=s.alignment_datasets, folds=s.learning_folds(),
    )
    return dg.MaterializeResult(
        metadata=readable({
            "training_examples": out["training_examples"],
            "items": out["items"],
            "checkpoint": dg.MetadataValue.path(str(out["checkpoint"])),
            "checkpoint_dir": dg.MetadataValue.path(str(out["checkpoint_dir"])),
            "validation_split": out["validation_split"],
            "skipped_turns_without_history": out["skipped_turns_without_history"],
            "val_turns": out["val_turns"], "test_turns": out["test_turns"],
            "epochs_run": out["epochs_run"], "iterations": out["iterations"],
            "full_softmax": out["full_softmax"],
            **_metrics("val", out["val"]), **_metrics("test", out["test"]),
            **_metrics("test_before_sft", out["test_before"]),
        })
    )


@dg.asset(key=DIALOGUE, group_name=GROUP, kinds={"pytorch"}, owners=OWNERS,
          deps=[PRETRAINED, TURNS, SEQUENCES, CORPUS, VECTORS], op_tags=gpu_step_tags())
def dialogue_retriever(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """The dialogue-aware retriever (the default of RAR_RETRIEVER_KIND): the conversation so far, embedded
    with the movie_vectors model, matched against every film's text vector and fused with the LRU state
    of the mentioned films (history encoder and item projection from lrurec_pretrained), so a turn that
    names no film still retrieves on what the user said. Films stay tied to their text vectors; the item
    bias starts from log popularity in the turns learned from. Learns from the SFT and RL folds of the
    learning dialogues (RAR_ALIGNMENT_DATASETS), early-stopped on the SFT validation slice (never the
    gate's), keeping the mean of the weights of epochs 1 to the best (RAR_RETRIEVER_AVERAGE_WEIGHTS); then adds
    the co-mention prior of those dialogues (RAR_RETRIEVER_CO_MENTION_WEIGHT) and their popularity prior
    (RAR_RETRIEVER_POPULARITY_PRIOR). Metadata: val/* with both priors, val_no_prior/*
    without. Checkpoint: $RAR_HOME/retriever/dialogue/retriever.pt."""
    from training.layout import system_dir

    s = get_settings()
    try:
        out = train_dialogue_retriever(system_dir(s.home, "dialogue"), log=context.log.info)
    except VectorsUnusable as error:
        raise dg.Failure(f"{error} (or set RAR_RETRIEVER_KIND=lrurec)") from error
    return dg.MaterializeResult(
        metadata=readable({
            "training_examples": out["training_examples"], "items": out["items"],
            "checkpoint": dg.MetadataValue.path(str(out["checkpoint"])),
            "training_turns": out["training_turns"], "val_turns": out["val_turns"],
            "best_epoch": out["best_epoch"], "epochs_run": out["epochs_run"], "seconds": out["seconds"],
            "co_mention_pairs": out["co_mention_pairs"], "popularity_prior": out["popularity_prior"],
            "average_weights": out["average_weights"],
            **_metrics("val", out["val"]), **_metrics("val_no_prior", out["val_without_co_mentions"]),
        })
    )


class VectorsUnusable(RuntimeError):
    """movie_vectors is missing or holds another model's vectors than the dialogue encoder's."""


def train_dialogue_retriever(out_dir, learn_from_rl_fold: bool = True, log=None) -> dict:
    """Train the dialogue-aware retriever from this home's tables and movie_vectors with the settings'
    epochs, budget and folds (see :func:`training.dialogue_training.train_from_tables`).
    ``learn_from_rl_fold=False`` leaves the rounds' fold unseen: a parent whose rounds learn from new turns,
    as ``benchmarks/alignment_proof.py`` needs."""
    from training.dialogue_training import DialogueTrainConfig, train_from_tables
    from training.layout import checkpoint_path, text_vectors_dir
    from training.text_cache import TextVectorCache

    s = get_settings()
    store = s.vector_store()
    if not store.exists():
        raise VectorsUnusable("movie_vectors not found: the dialogue-aware retriever matches dialogues against the "
                              "films' text vectors; materialise movie_vectors first")
    embedder = store.embedder
    models = sorted(store.read_columns(["model"])["model"].unique().to_list())
    if models != [embedder.model_name]:
        raise VectorsUnusable(f"movie_vectors holds vectors of {models}, but dialogues are embedded with "
                              f"{embedder.model_name} (RAR_EMBEDDING_MODEL): rebuild movie_vectors with that model")
    pretrained = checkpoint_path(s.home, "pretrained")
    config = DialogueTrainConfig(epochs=s.sft_epochs, seed=s.seed, threads=s.retriever_threads,
                                 max_minutes=s.retriever_minutes, popularity_prior=s.retriever_popularity_prior,
                                 average_weights=s.retriever_average_weights)
    return train_from_tables(
        s.table_path("conversation_turns"), s.table_path("movie_corpus"), out_dir,
        store.load_vectors, TextVectorCache(embedder, text_vectors_dir(s.home)), embedder.model_name, config,
        model_config={"hidden": s.retriever_hidden, "co_mention_weight": s.retriever_co_mention_weight},
        datasets=s.alignment_datasets, folds=s.learning_folds(),
        pretrained_checkpoint=pretrained if _text_tied(pretrained) else None, learn_from_rl_fold=learn_from_rl_fold,
        sequences_path=s.table_path("user_sequences"), log=log,
    )


def _text_tied(checkpoint) -> bool:
    """True when ``checkpoint`` is an LRURec whose items are tied to their text (it can start the
    dialogue-aware retriever's history encoder)."""
    if not checkpoint.is_file():
        return False
    import torch

    from corpus_build.storage import local_copy

    return torch.load(local_copy(checkpoint), map_location="cpu", weights_only=False).get("item_text") is not None


# --- checks (a broken checkpoint blocks the alignment rounds; a weak one warns) ------------------

CHANCE_MULTIPLE = 2.0  # a trained retriever's validation Recall@10 beats a random ranking at least this many times


def validation_above_chance(key: dg.AssetKey) -> dg.AssetChecksDefinition:
    """Validation Recall@10 of ``key`` at least CHANCE_MULTIPLE x a random ranking's (10 / films)."""

    @dg.asset_check(
        asset=key, name="validation_recall_above_chance",
        description=f"Warns when validation Recall@10 is below {CHANCE_MULTIPLE:g}x that of a random ranking (10 / "
        "films): training learnt nothing (too short, diverged, or fed the wrong data). A warning, not a stop: on a "
        "few validation turns an undertrained retriever can score 0 by chance.",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        metadata = latest_metadata(context.instance, key)
        recall, items = metadata.get("val/Recall@10"), metadata.get("items")
        if recall is None or not items:
            return dg.AssetCheckResult(passed=False, metadata={"error": "no val/Recall@10 or items recorded"})
        floor = CHANCE_MULTIPLE * min(10, items) / items
        return dg.AssetCheckResult(passed=float(recall) >= floor, severity=dg.AssetCheckSeverity.WARN,
                                   metadata=readable({"val/Recall@10": float(recall), "floor": floor, "items": items,
                                                      "validation_examples": metadata.get("val_turns", metadata.get("users"))}))

    return _check


def weights_finite(key: dg.AssetKey, system: str) -> dg.AssetChecksDefinition:
    """The exported checkpoint of ``system`` loads, its weights are finite and its ids match its items."""

    @dg.asset_check(asset=key, name="checkpoint_sound", blocking=True,
                    description="The exported checkpoint loads, every weight is finite (no NaN or inf) and its "
                    "film ids match its item table.")
    def _check() -> dg.AssetCheckResult:
        from training.layout import checkpoint_path
        from training.retriever import checkpoint_problems

        path = checkpoint_path(get_settings().home, system)
        problems = checkpoint_problems(path)
        return dg.AssetCheckResult(passed=not problems, metadata={"checkpoint": dg.MetadataValue.path(str(path)),
                                                                  "problems": problems})

    return _check


pretrained_validation_above_chance = validation_above_chance(PRETRAINED)
sft_validation_above_chance = validation_above_chance(SFT)
pretrained_checkpoint_sound = weights_finite(PRETRAINED, "pretrained")
sft_checkpoint_sound = weights_finite(SFT, "sft")
dialogue_validation_above_chance = validation_above_chance(DIALOGUE)
dialogue_checkpoint_sound = weights_finite(DIALOGUE, "dialogue")
