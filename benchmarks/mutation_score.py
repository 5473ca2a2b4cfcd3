"""Mutation score per module from a mutmut run (``mutants/**/*.meta``), equivalent mutants excluded.

    nice -n 10 mutmut run --max-children 2          # or one module: mutmut run "training.promotion*"
    python benchmarks/mutation_score.py [--json] [--survivors]

Score = killed / (killed + survived + no tests), over the mutants that were run; timeouts count as killed
(the mutant hung the tests). Equivalent mutants (``EQUIVALENT`` below: the reason each changes nothing a
caller can observe) are left out. ``--survivors`` lists the surviving mutants of each module.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUTANTS = REPO / "mutants"
# mutmut's exit codes: 1 (and any other failure) killed; 0 survived; 33 no test covers the function;
# 34 skipped; 36, 24, -24, 152, 255 time-outs; None not run yet.
NO_TESTS, SKIPPED, TIMEOUTS = 33, 34, {36, 24, -24, 152, 255}

_ARANGE = "torch.arange over k positions: "
_MERGE, _LINKING = "corpus_build.merge.x_", "corpus_build.linking.x"
_PROTOCOL, _REPORT = "training.evaluation_protocol.x_", "training.evaluation_report.x_"


def _named(prefix: str, names: list[str], reason: str) -> dict[str, str]:
    return dict.fromkeys((prefix + name for name in names), reason)


EQUIVALENT = {
    "training.ranking_metrics.x_metrics_from_ranks__mutmut_26":
        _ARANGE + "dtype=None gives int64 positions; log2(positions + 2.0) promotes them to float32 first",
    "training.ranking_metrics.x_metrics_from_ranks__mutmut_29": _ARANGE + "no dtype: the same as dtype=None",
    **dict.fromkeys(
        ["training.promotion.x_gate_verdict__mutmut_4", "training.promotion.x_gate_verdict__mutmut_6",
         "training.promotion.x_gate_verdict__mutmut_8", "training.promotion.x_gate_verdict__mutmut_10",
         "training.promotion.x_paired_lower_bound__mutmut_4", "training.promotion.x_paired_lower_bound__mutmut_6"],
        "np.asarray without dtype=float on one side of after - before: the other side is float, so the gains "
        "are float whatever the input (numbers or booleans)"),
    **dict.fromkeys(
        ["training.layout.x_round_records__mutmut_2", "training.layout.x_round_records__mutmut_4"],
        "sorting the record files by their whole path: every path is <rounds>/<round>/round.json, so it sorts by "
        "the round's name exactly as the key did"),
    "training.promotion.x_paired_lower_bound__mutmut_18":
        "rng.integers(n, size=...) draws from [0, n) exactly as rng.integers(0, n, size=...), from the same stream",
    **_named(_LINKING, ["ǁLinkLogǁlink_rate__mutmut_3"],
        "a dataset never recorded: total None instead of 0, both falsy, the rate is 0.0"),
    **_named(_LINKING, ["ǁLinkLogǁlink_rate__mutmut_5"],
        "mentions.get(dataset) returns None for a dataset never recorded, falsy like 0: the rate is 0.0"),
    **_named(_LINKING, ["ǁLinkLogǁlink_rate__mutmut_6"],
        "a dataset never recorded has no links either (record and merge count a link only with its mention): 0 / 1 = "
        "0.0"),
    **_named(_LINKING, ["ǁLinkerǁ__post_init____mutmut_49"],
        "a corpus without vote counts gives every film 1 instead of 0: the same for all, and only their order counts"),
    **_named(_LINKING, ["ǁLinkerǁ_most_voted__mutmut_8"],
        "undated films sort after dated ones with 9999 as with 10000: corpus years stop at next year (merge._validate)"),
    **_named(_LINKING, ["ǁLinkerǁlink__mutmut_3"],
        "the cache key of a mention without an id becomes the text 'None', an id that normalises to no id: both keys "
        "give the same link"),
    **_named(_MERGE, ["_aliases__mutmut_36"],
        "a film with its title only has one name, whose spelling key is the title's: the filter after the explode drops "
        "it anyway"),
    **_named(_MERGE, ["_aliases__mutmut_5", "_aliases__mutmut_66"],
        "the order of the film groups is never observed: they are joined on movie_id"),
    **_named(_MERGE, [
        "_assign__mutmut_96", "_assign_entities__mutmut_111", "_prepare__mutmut_26", "adjacent_year_blocks__mutmut_25",
        "build_corpus__mutmut_15", "merge_rows__mutmut_35"],
        "pl.concat's default how is 'vertical': the same call"),
    **_named(_MERGE, ["_assign_entities__mutmut_124"],
        "rows with and without an IMDb id have the same columns in the same order here, so a vertical concat is the "
        "diagonal one"),
    **_named(_MERGE, ["_canonical_genres_expr__mutmut_17"],
        "replace_strict without a default: every non-null spelling is a key of the mapping and nulls pass through"),
    **_named(_MERGE, [
        "_canonical_genres_expr__mutmut_4", "_canonical_genres_expr__mutmut_5", "_canonical_genres_expr__mutmut_8",
        "_canonical_genres_expr__mutmut_9"],
        "null and empty genre lists only add None to the spellings, which the mapping skips (if s is not None)"),
    **_named(_MERGE, ["_combine__mutmut_107", "_combine__mutmut_108", "_combine__mutmut_112", "_combine__mutmut_113"],
        "explode's null/empty switches: _names always holds the (non-null) title, so it is never null nor empty"),
    **_named(_MERGE, ["_combine__mutmut_39"],
        "a film of one row through the group-by gets the same fields: the one-row path is a shortcut"),
    **_named(_MERGE, ["_entity_keys__mutmut_11"],
        "unique over every column: the frame has exactly the three columns named"),
    **_named(_MERGE, ["_entity_keys__mutmut_12"],
        "drop_nulls over every column: _entity, the third one, is never null"),
    **_named(_MERGE, ["_entity_keys__mutmut_70"],
        "votes are counts >= 0: null as -2 ranks below every real count exactly as -1 does"),
    **_named(_MERGE, ["_exact_candidates__mutmut_68", "_exact_candidates__mutmut_69"],
        "exact candidates are assigned among themselves (fuzzy ones in a later call), all with the same score: its "
        "value orders nothing"),
    **_named(_MERGE, ["_fuzzy_candidates__mutmut_15", "_fuzzy_candidates__mutmut_16"],
        "keys of 4 letters are short (< 10): the 96 they need is out of reach unless the key is identical, and "
        "identical keys of a free film one year apart were exact candidates"),
    **_named(_MERGE, ["_fuzzy_candidates__mutmut_40"],
        "process.cdist's default scorer is fuzz.ratio"),
    **_named(_MERGE, ["_fuzzy_candidates__mutmut_43", "_fuzzy_candidates__mutmut_44"],
        "workers sets rapidfuzz's thread count only"),
    **_named(_MERGE, ["_fuzzy_candidates__mutmut_56"],
        "a short key (< 10 letters) that is not identical scores at most 100 * (1 - 1/19) = 94.7: never exactly 96"),
    **_named(_MERGE, ["_fuzzy_candidates__mutmut_92", "_fuzzy_candidates__mutmut_94"],
        "the schema polars infers is the one given (lists of str, float, int; votes are never null), and an empty frame "
        "yields no link either way"),
    **_named(_MERGE, ["_genre_union__mutmut_12", "_genre_union__mutmut_16"],
        "sorting without _entity first: the order within each entity is the same, and unique/group_by keep it"),
    **_named(_MERGE, ["_genre_union__mutmut_20"],
        "drop_nulls over every column: only _g can be null"),
    **_named(_MERGE, ["_genre_union__mutmut_34", "_genre_union__mutmut_35", "_genre_union__mutmut_36"],
        "the genres' field precedence is SOURCE_ORDER, the fallback of an unknown field"),
    **_named(_MERGE, ["_genre_union__mutmut_5", "_genre_union__mutmut_70"],
        "the order of the entity groups is never observed: they are joined on _entity"),
    **_named(_MERGE, ["_groups__mutmut_14", "_groups__mutmut_19"],
        "the order of the groups is never observed: _assign sorts the candidates fully, the rest joins on keys"),
    **_named(_MERGE, ["_groups__mutmut_25", "_groups__mutmut_27"],
        "map_elements infers String from the rar: ids it returns"),
    **_named(_MERGE, ["_joined__mutmut_10"],
        "list.head(None) keeps the whole list, as the else branch does"),
    **_named(_MERGE, ["_label_group_rows__mutmut_13"],
        "every row's (title key, year) is a group, so the inner join keeps every row as the left one does"),
    **_named(_MERGE, ["_label_group_rows__mutmut_76", "_label_group_rows__mutmut_77", "_label_group_rows__mutmut_78"],
        "a helper column left in place is never selected downstream"),
    **_named(_MERGE, [
        "_precedence_rank__mutmut_10", "_precedence_rank__mutmut_23", "_precedence_rank__mutmut_25",
        "_precedence_rank__mutmut_8"],
        "the width of an integer literal: ranks are only compared, never written out"),
    **_named(_MERGE, ["_prepare__mutmut_78"],
        "_precedence_rank(None) and ('') both fall back to SOURCE_ORDER (no field has that name)"),
    **_named(_MERGE, ["_prepare__mutmut_79"],
        "_precedence_rank('XXXX') and ('') both fall back to SOURCE_ORDER (no field has that name)"),
    **_named(_MERGE, ["_source_stats__mutmut_22", "_source_stats__mutmut_30", "_source_stats__mutmut_50"],
        "= instead of += on a counter still at 0: group_by yields each source (and match kind) once"),
    **_named(_MERGE, [
        "_split_title_conflicts__mutmut_1", "_split_title_conflicts__mutmut_18", "_split_title_conflicts__mutmut_20"],
        "first row of an id with no explicit order: the rows arrive sorted by exactly that order (_prepare sorts, "
        "_validate's filter keeps it)"),
    **_named(_MERGE, ["_split_title_conflicts__mutmut_185", "_split_title_conflicts__mutmut_188"],
        "a Series of Python floats is Float64 without being told"),
    **_named(_MERGE, ["_split_title_conflicts__mutmut_212"],
        "join's default how is 'inner'"),
    **_named(_MERGE, ["_split_title_conflicts__mutmut_40", "_split_title_conflicts__mutmut_42"],
        "the empty conflict frame's null-typed reason is cast to String when concatenated after the rejected rows"),
    **_named(_MERGE, ["_split_title_conflicts__mutmut_80"],
        "drop_nulls over every column: only _name and _ref_name can be null"),
    **_named(_MERGE, ["merge_rows__mutmut_51"],
        "the sum over an empty corpus's sources is 0, the else value"),
    **_named(_PROTOCOL, ["bootstrap_ci__mutmut_8", "bootstrap_ci__mutmut_11"], 'float("NAN") is nan as float("nan") is'),
    **_named(_PROTOCOL, ["bootstrap_ci__mutmut_18"],
        "rng.integers(n, size=...) draws from [0, n) exactly as rng.integers(0, n, size=...), from the same stream"),
    **_named(_PROTOCOL, ["chart_png__mutmut_19"], "matplotlib lower-cases savefig's format: 'PNG' is 'png'"),
    **_named(_PROTOCOL, ["chart_png__mutmut_47"], "Pillow upper-cases save's format: 'png' is 'PNG'"),
    **_named(_PROTOCOL, ["chart_png__mutmut_29"],
        "a PNG exactly width_px wide resized to its own size: Pillow returns an unchanged copy"),
    **_named(_PROTOCOL, ["chart_figure__mutmut_28"],
        "the system count of an empty summary, 2 instead of 1: both give the 1.6 in minimum panel height"),
    **_named(_PROTOCOL, ["chart_figure__mutmut_50"], "subplots(squeeze=None): only a true squeeze squeezes"),
    **_named(_REPORT, ["_sample__mutmut_3"],
        "a frame of exactly `limit` rows sampled without shuffling: every row, in the frame's order"),
    **_named(_REPORT, ["evaluate_systems__mutmut_7", "evaluate_systems__mutmut_8", "evaluate_systems__mutmut_78"],
        "Protocol's switches default to True, and per_turn_results' protocol to Protocol(): both switches on"),
    **_named(_REPORT, ["retriever_rankings__mutmut_7"],
        "contexts passed to an LRURec retriever: Retriever.scores reads them for the dialogue kind only"),
}


def verdict(code) -> str:
    if code is None:
        return "not run"
    if code == 0:
        return "survived"
    if code == NO_TESTS:
        return "no tests"
    if code == SKIPPED:
        return "skipped"
    return "timeout" if code in TIMEOUTS else "killed"


def scores() -> dict[str, dict]:
    out = {}
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        module = meta.relative_to(MUTANTS).with_suffix("").with_suffix("").as_posix().replace("/", ".")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts: Counter = Counter()
        survivors = []
        for name, code in codes.items():
            kind = "equivalent" if name in EQUIVALENT else verdict(code)
            counts[kind] += 1
            if kind in ("survived", "no tests"):
                survivors.append(f"{name} ({kind})")
        judged = counts["killed"] + counts["timeout"] + counts["survived"] + counts["no tests"]
        out[module] = {
            "mutants": len(codes), **counts,
            "score": (counts["killed"] + counts["timeout"]) / judged if judged else None,
            "survivors": sorted(survivors),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--survivors", action="store_true", help="list each module's surviving mutants")
    args = parser.parse_args()
    if not MUTANTS.is_dir():
        print(f"no {MUTANTS}: run mutmut first", file=sys.stderr)
        return 2
    result = scores()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("| module | mutants | run | killed | timeout | survived | no tests | equivalent | score |")
    print("|---|---|---|---|---|---|---|---|---|")
    for module, row in result.items():
        run = row["mutants"] - row.get("not run", 0)
        score = "-" if row["score"] is None else f"{row['score']:.1%}"
        print(f"| {module} | {row['mutants']} | {run} | {row.get('killed', 0)} | {row.get('timeout', 0)} | "
              f"{row.get('survived', 0)} | {row.get('no tests', 0)} | {row.get('equivalent', 0)} | {score} |")
    if args.survivors:
        for row in result.values():
            for survivor in row["survivors"]:
                print(f"  {survivor}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
