"""Alignment stage: RL rounds that align the retriever to the frozen generator, and the promotion gate."""

import dagster as dg

from assets.keys import ALIGNED, ALIGNMENT_ROUND, CORPUS, OWNERS, SFT, TURNS, VECTORS
from rar_pipeline.partitions import ALIGNMENT_ROUNDS
from rar_pipeline.resources import GeneratorResource
from rar_pipeline.settings import get_settings

GROUP = "alignment"
GATE_CHECK = "promotion_gate"


def _round_config():
    from training.alignment_round import RoundConfig

    s = get_settings()
    return RoundConfig(
        objective=s.alignment_objective, num_sets=s.alignment_num_sets, set_size=s.alignment_set_size,
        epochs=s.alignment_epochs, lr=s.alignment_lr, nll_weight=s.alignment_nll_weight,
        temperature=s.alignment_temperature, probe_turns=s.alignment_probe_turns, seed=s.seed,
        rollout_every=s.alignment_rollout_every, reward_baseline=s.alignment_reward_baseline,
        shuffle_candidates=s.alignment_shuffle_candidates, max_generator_requests=s.alignment_max_generator_requests,
    )


def _gate_rule():
    from training.promotion import GateRule

    s = get_settings()
    return GateRule(min_delta=s.alignment_gate_min_delta, min_turns=s.alignment_gate_min_turns,
                    confidence=s.alignment_gate_confidence, seed=s.seed)


def _gate_gain(record: dict) -> dict:
    """The gate's mean gain and its lower bound (absent when the gate was too small to compute it)."""
    out = {"gate_gain": float(record["gate_gain"])}
    if record["gate_gain_lower"] is not None:
        out["gate_gain_lower"] = float(record["gate_gain_lower"])
    return out


def _cell(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _round_metadata(record: dict, generator) -> dict:
    """What a data engineer compares across rounds: floats for the UI's trend plots."""
    floats = {
        key: float(record[key])
        for key in ("rollout_reward_mean", "reward_mean_before", "reward_std_before", "reward_mean_after",
                    "reward_std_after", "gate_ndcg_before", "gate_ndcg_after", "seconds",
                    "rollouts", "rollouts_sent", "rollout_phases")
    }
    curve = record["loss_curve"]
    columns = ["rollout", "rollout_reward", "loss", "rl", "nll", "kl", "clip_fraction"]
    curve_table = "\n".join(
        ["| epoch | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        + [f"| {r['epoch']} | " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in curve]
    )
    last = curve[-1] if curve else {}
    return {
        **floats,
        **_gate_gain(record),
        "gate_reason": record["gate_reason"],
        "final_kl": float(last.get("kl", 0.0)),
        "final_clip_fraction": float(last.get("clip_fraction", 0.0)),
        "dagster/row_count": int(record["rollouts"]),
        "parent_round": record["parent_round"],
        "gate_passed": bool(record["gate_passed"]),
        "objective": record["config"]["objective"],
        "train_turns": float(record["train_turns"]),
        "gate_turns": float(record["gate_turns"]),
        "final_loss": float(curve[-1]["loss"]) if curve else 0.0,
        "loss_curve": dg.MetadataValue.md(curve_table),
        "generator_backend": generator.name,
        **generator.stats.as_dict(),
    }


@dg.asset(
    key=ALIGNMENT_ROUND,
    partitions_def=ALIGNMENT_ROUNDS,
    group_name=GROUP,
    kinds={"pytorch"},
    owners=OWNERS,
    deps=[SFT, TURNS, CORPUS, VECTORS],
    check_specs=[
        dg.AssetCheckSpec(
            GATE_CHECK, asset=ALIGNMENT_ROUND, blocking=True,
            description="Pipeline NDCG@10 (retriever top-K re-ranked by the generator) on the gate slice rises "
            "over the round's parent: the paired-bootstrap lower bound of the gain is at least "
            "RAR_ALIGNMENT_GATE_MIN_DELTA, on at least RAR_ALIGNMENT_GATE_MIN_TURNS turns; a failing round is "
            "kept but never promoted, and says why.",
        )
    ],
)
def alignment_round(context: dg.AssetExecutionContext, generator: GeneratorResource) -> dg.MaterializeResult:
    """One RL alignment round (one partition): start from the last promoted retriever (the SFT one at
    first); every RAR_ALIGNMENT_ROLLOUT_EVERY epoch(s) the current retriever samples G candidate sets per
    training turn (RL fold), the frozen generator ranks them (shown in a seeded shuffled order), each is
    rewarded by NDCG; only the retriever is updated (GRPO or DPO + NLL). Resumable; a finished round
    makes no generator calls. Outputs `$RAR_HOME/alignment/rounds/<round>/` (retriever.pt, round.json,
    rollouts/)."""
    from training.alignment_round import GeneratorUnavailable, align_from_tables
    from training.layout import round_dir
    from training.promotion import round_parent

    s = get_settings()
    parent_checkpoint, parent_round = round_parent(s.home)
    folder = round_dir(s.home, context.partition_key)
    gen = generator.make_generator()
    try:
        record = align_from_tables(
            folder, parent_checkpoint, parent_round, s.table_path("conversation_turns"),
            s.table_path("movie_corpus"), gen, _round_config(), s.alignment_datasets,
            s.learning_folds(), s.alignment_max_turns, _gate_rule(), log=context.log.info,
        )
    except GeneratorUnavailable as error:
        raise dg.Failure(
            f"generator unavailable mid-round: {error}. Finished rollout batches are kept under {folder}; "
            "re-run this partition to resume.",
            metadata=gen.stats.as_dict(),
        ) from error
    finally:
        gen.close()
    gate = dg.AssetCheckResult(
        check_name=GATE_CHECK,
        passed=bool(record["gate_passed"]),
        description=record["gate_reason"],
        metadata={"gate_ndcg_before": float(record["gate_ndcg_before"]),
                  "gate_ndcg_after": float(record["gate_ndcg_after"]), "parent_round": record["parent_round"],
                  "gate_turns": float(record["gate_turns"]), "reason": record["gate_reason"],
                  **_gate_gain(record)},
    )
    return dg.MaterializeResult(
        metadata={**_round_metadata(record, gen), "round_dir": dg.MetadataValue.path(str(folder))},
        check_results=[gate],
    )


@dg.asset(key=ALIGNED, group_name=GROUP, kinds={"pytorch"}, owners=OWNERS, deps=[ALIGNMENT_ROUND])
def aligned_retriever(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """The retriever of the latest round that passed the promotion gate: the round of this run when
    launched with a round (its gate check is blocking, so a rejected round never gets here), else the
    newest passed round. Checkpoint: $RAR_HOME/retriever/aligned/retriever.pt."""
    from training.layout import checkpoint_path
    from training.promotion import latest_passed_round, promote

    s = get_settings()
    round_name = context.run.tags.get("dagster/partition") or latest_passed_round(s.home)
    if round_name is None:
        raise dg.Failure("no alignment round has passed the promotion gate yet")
    pointer = promote(s.home, round_name)
    context.log.info(f"aligned retriever is now {round_name} (parent {pointer['parent_round']})")
    return dg.MaterializeResult(
        metadata={
            "round": round_name, "parent_round": pointer["parent_round"],
            "gate_ndcg_before": float(pointer["gate_ndcg_before"]),
            "gate_ndcg_after": float(pointer["gate_ndcg_after"]),
            "checkpoint": dg.MetadataValue.path(str(checkpoint_path(s.home, "aligned"))),
        }
    )
