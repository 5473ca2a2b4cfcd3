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
