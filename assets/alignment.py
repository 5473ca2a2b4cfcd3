"""Alignment stage: RL rounds that align the retriever to the frozen generator, and the promotion gate."""

import warnings
from datetime import timedelta

import dagster as dg

from assets.keys import ALIGNED, ALIGNMENT_ROUND, CORPUS, DIALOGUE, OWNERS, SFT, TURNS, VECTORS
from assets.metadata import readable
from rar_pipeline.execution import gpu_step_tags
from rar_pipeline.partitions import ALIGNMENT_ROUNDS
from rar_pipeline.resources import GeneratorResource
from rar_pipeline.settings import get_settings

GROUP = "alignment"
GATE_CHECK = "promotion_gate"


def gate_check_spec() -> dg.AssetCheckSpec:
    """The promotion gate, one result per round partition. Not blocking: aligned_retriever itself refuses a
    rejected round, so a rejection leaves the run green and says why on the round."""
    with warnings.catch_warnings():  # partitioned checks are a preview feature of Dagster 1.13: the warning is noise here
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            GATE_CHECK, asset=ALIGNMENT_ROUND, partitions_def=ALIGNMENT_ROUNDS,
            description="Pipeline NDCG@10 (retriever top-K re-ranked by the generator) on the gate slice rises "
            "over the round's parent: the paired-bootstrap lower bound of the gain is at least "
            "RAR_ALIGNMENT_GATE_MIN_DELTA, on at least RAR_ALIGNMENT_GATE_MIN_TURNS turns. A rejected round is "
            "kept but never promoted; the warning says why.",
        )


def _round_config():
    from training.alignment_round import RoundConfig

    s = get_settings()
    return RoundConfig(
        objective=s.alignment_objective, num_sets=s.alignment_num_sets, set_size=s.alignment_set_size,
        epochs=s.alignment_epochs, lr=s.alignment_lr, nll_weight=s.alignment_nll_weight,
        temperature=s.alignment_temperature, probe_turns=s.alignment_probe_turns, seed=s.seed,
        rollout_every=s.alignment_rollout_every, rollout_steps=s.alignment_rollout_steps,
        reward_baseline=s.alignment_reward_baseline, dpo_pairs=s.alignment_dpo_pairs,
        shuffle_candidates=s.alignment_shuffle_candidates, max_generator_requests=s.alignment_max_generator_requests,
    )


def _gate_rule():
    from training.promotion import GateRule

    s = get_settings()
    return GateRule(min_delta=s.alignment_gate_min_delta, min_turns=s.alignment_gate_min_turns,
                    confidence=s.alignment_gate_confidence, seed=s.seed)


def _gate_gain(record: dict) -> dict:
    """The gate's mean gain and its lower bound (absent when the gate was too small to compute it)."""
    out = {"gate_gain": record["gate_gain"]}
    if record["gate_gain_lower"] is not None:
        out["gate_gain_lower"] = record["gate_gain_lower"]
    return out


def _cell(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _round_metadata(record: dict, generator) -> dict:
    """What a data engineer compares across rounds: numbers for the UI's trend plots."""
    floats = {
        key: record[key]
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
    op_tags=gpu_step_tags(),
    partitions_def=ALIGNMENT_ROUNDS,
    group_name=GROUP,
    kinds={"pytorch"},
    owners=OWNERS,
    deps=[SFT, DIALOGUE, TURNS, CORPUS, VECTORS],
    check_specs=[gate_check_spec()],
)
def alignment_round(context: dg.AssetExecutionContext, generator: GeneratorResource) -> dg.MaterializeResult:
    """One RL alignment round (one partition): start from the last promoted retriever (at first the
    fine-tuned retriever of RAR_RETRIEVER_KIND: dialogue_retriever, or lrurec_sft); every RAR_ALIGNMENT_ROLLOUT_EVERY epoch(s) the current retriever samples G candidate sets per
    training turn (RL fold), the frozen generator ranks them (shown in a seeded shuffled order), each is
    rewarded by NDCG; only the retriever is updated (GRPO or DPO + NLL). Resumable; a finished round
    makes no generator calls. Outputs `$RAR_HOME/alignment/rounds/<round>/` (retriever.pt, round.json,
    rollouts/). A round the gate rejects is kept for inspection; its promotion_gate check says why."""
    from training.alignment_round import align_from_tables
    from training.layout import round_dir, text_vectors_dir
    from training.promotion import round_parent
    from training.rollouts import GeneratorUnavailable

    s = get_settings()
    parent_checkpoint, parent_round = round_parent(s.home, s.retriever_kind)
    folder = round_dir(s.home, context.partition_key)
    gen = generator.make_generator()
    try:
        record = align_from_tables(
            folder, parent_checkpoint, parent_round, s.table_path("conversation_turns"),
            s.table_path("movie_corpus"), gen, _round_config(), s.alignment_datasets,
            s.learning_folds(), s.alignment_max_turns, _gate_rule(), log=context.log.info,
            text_cache_dir=text_vectors_dir(s.home),
        )
    except GeneratorUnavailable as error:
        raise dg.Failure(
            f"generator unavailable mid-round: {error}. Finished rollout batches are kept under {folder}; "
            "re-run this partition to resume.",
            metadata=readable(gen.stats.as_dict()),
        ) from error
    finally:
        gen.close()
    return dg.MaterializeResult(
        metadata=readable({**_round_metadata(record, gen), "round_dir": dg.MetadataValue.path(str(folder))}),
        check_results=[gate_result(context.partition_key, record)],
    )


def gate_result(round_name: str, record: dict) -> dg.AssetCheckResult:
    """The promotion gate's verdict on a finished round: passed, or a warning that says why not and what the
    gate measured (a rejection is the gate doing its job, not a failure of the pipeline)."""
    return dg.AssetCheckResult(
        check_name=GATE_CHECK,
        passed=bool(record["gate_passed"]),
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{round_name}: {record['gate_reason']}",
        metadata=readable({"round": round_name, "parent_round": record["parent_round"],
                           "gate_ndcg_before": record["gate_ndcg_before"], "gate_ndcg_after": record["gate_ndcg_after"],
                           "gate_turns": record["gate_turns"], "reason": record["gate_reason"], **_gate_gain(record)}),
    )


# The nightly_alignment schedule decides every night (a promotion, or the same retriever recorded again): a
# warning once a night is missed, a failure after two.
NIGHTLY = dg.FreshnessPolicy.time_window(warn_window=timedelta(hours=26), fail_window=timedelta(hours=50))


@dg.asset(key=ALIGNED, group_name=GROUP, kinds={"pytorch"}, owners=OWNERS, deps=[ALIGNMENT_ROUND], output_required=False,
          freshness_policy=NIGHTLY)
def aligned_retriever(context: dg.AssetExecutionContext):
    """The retriever of the latest round that passed the promotion gate. In a run with a round (the nightly
    job, the main job) it promotes that round when the gate passed it; when the gate rejected it, the
    promoted retriever stays and is recorded again, unchanged (same data version: nothing downstream goes
    stale), with the rejected round and the gate's reason. Before any round has passed there is nothing to
    record, and this asset and what depends on it are skipped in that run. Materialised alone, it promotes
    the newest passed round. Expected nightly (the nightly_alignment schedule). Checkpoint:
    `$RAR_HOME/retriever/aligned/retriever.pt`."""
    from training.layout import checkpoint_path, finished_round, promoted_record, round_dir
    from training.promotion import latest_passed_round, promote

    s = get_settings()
    candidate = context.run.tags.get("dagster/partition")
    if candidate is None:
        candidate = latest_passed_round(s.home)
        if candidate is None:
            raise dg.Failure("no alignment round has passed the promotion gate yet: run nightly_alignment (or the "
                             "main job) until one does")
    record = finished_round(round_dir(s.home, candidate))
    if record is None:
        raise dg.Failure(f"{candidate} has no finished round under {round_dir(s.home, candidate)}")
    if record.get("gate_passed"):
        pointer = promote(s.home, candidate)
        context.log.info(f"aligned retriever is now {candidate} (parent {pointer['parent_round']})")
        promoted, rejected = pointer, None
    else:
        promoted, rejected = promoted_record(s.home), candidate
        if promoted is None:
            context.log.warning(f"{candidate} was not promoted ({record['gate_reason']}) and no round has passed the "
                                "gate yet: the SFT retriever stays the best one; aligned_retriever and what depends "
                                "on it are skipped in this run")
            return
        context.log.info(f"{candidate} was not promoted ({record['gate_reason']}): {promoted['round']} stays the "
                         "aligned retriever")
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(promoted["round"]),
        metadata=readable({
            "round": promoted["round"], "promoted": rejected is None, "parent_round": promoted["parent_round"],
            "promoted_at": promoted.get("promoted_at"),
            "gate_ndcg_before": promoted["gate_ndcg_before"], "gate_ndcg_after": promoted["gate_ndcg_after"],
            "rejected_round": rejected, "rejection_reason": record["gate_reason"] if rejected else None,
            "checkpoint": dg.MetadataValue.path(str(checkpoint_path(s.home, "aligned"))),
        }),
    )


@dg.asset_check(asset=ALIGNED, blocking=True, description="The promoted pointer names a round that passed the gate, "
                "and the aligned checkpoint loads with finite weights.")
def serves_a_sound_checkpoint() -> dg.AssetCheckResult:
    from training.layout import checkpoint_path, finished_round, promoted_record, round_dir
    from training.retriever import checkpoint_problems

    home = get_settings().home
    pointer = promoted_record(home)
    if pointer is None:
        return dg.AssetCheckResult(passed=False, metadata={"problems": ["no promoted.json: nothing is promoted"]})
    record = finished_round(round_dir(home, pointer["round"]))
    problems = [] if record is not None else [f"{pointer['round']} has no finished round record"]
    if record is not None and not record.get("gate_passed"):
        problems.append(f"{pointer['round']} did not pass the promotion gate")
    problems += checkpoint_problems(checkpoint_path(home, "aligned"))
    return dg.AssetCheckResult(passed=not problems, metadata={"round": pointer["round"], "problems": problems})
