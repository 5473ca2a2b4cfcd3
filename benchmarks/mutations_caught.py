"""Test of the tests: plant each known bug (a "mutation") in a temporary copy of the repository, run the
tests meant to catch it, and report which are caught.

The list holds bugs that once went unnoticed where the stages meet (the evaluation report, the promotion
gate, blocking checks, stable ids, the linker, the metrics, the CLI). A bug is *caught* when its tests
fail on the mutated copy; a mutation whose text is no longer in the file is reported as ``stale`` (the
code moved: update the list). The unmutated copy must pass the same tests first (``--no-baseline`` skips
that). Runs niced, one mutation at a time; the whole list takes ~15-30 minutes on the 2-core box.

    python benchmarks/mutations_caught.py [--only NAME_PART ...] [--json] [--check]
    python benchmarks/mutations_caught.py --mutmut MUTANT_NAME ... --tests TEST ...   # re-check mutmut mutants

Exit status 0 when every mutation is caught, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str  # the bug, in words
    path: str  # file, relative to the repository
    old: str  # text that must occur exactly once in the file
    new: str  # what it becomes
    tests: tuple[str, ...]  # pytest paths or node ids that must catch it


def _checks(name: str, path: str, old: str, tests: tuple[str, ...]) -> Mutation:
    """A blocking check made to pass whatever the data: ``passed=<expression>`` becomes ``passed=True``."""
    return Mutation(f"check {name} always passes", path, f"passed={old}", "passed=True", tests)


REPORT = "training/evaluation_report.py"
REPORT_TESTS = ("tests/test_evaluation_report.py",)
BLOCKING = ("tests/test_blocking_checks.py",)
MUTATIONS = [
    # --- the evaluation report
    Mutation("report: both protocol switches off", REPORT,
             "Protocol(exclude_mentioned=True, in_corpus_only=True)",
             "Protocol(exclude_mentioned=False, in_corpus_only=False)", REPORT_TESTS),
    Mutation("report: targets mentioned before are kept", REPORT,
             "Protocol(exclude_mentioned=True, in_corpus_only=True)",
             "Protocol(exclude_mentioned=False, in_corpus_only=True)", REPORT_TESTS),
    Mutation("report: targets outside the corpus are kept", REPORT,
             "Protocol(exclude_mentioned=True, in_corpus_only=True)",
             "Protocol(exclude_mentioned=True, in_corpus_only=False)", REPORT_TESTS),
    Mutation("report: popularity rankings keep the user's history", REPORT,
             "(m for m in ranked if m not in seen)", "(m for m in ranked)", REPORT_TESTS),
    Mutation("report: next-item history drops the validation film", REPORT,
             "[t + [v] for t, v in", "[t for t, v in", REPORT_TESTS),
    Mutation("report: evaluates the validation turns the rounds learned from", REPORT,
             '(pl.col("dataset") == dataset) & (pl.col("split") == split)',
             '(pl.col("dataset") == dataset) & pl.col("split").is_in([split, "validation"])', REPORT_TESTS),
    Mutation("report: MovieLens next-item evaluation never runs", REPORT,
             "if sequences is not None and sequences.height:", "if False:",
             ("tests/test_evaluation_report.py", "tests/test_alignment_assets.py::test_round_gate_promotion_report_and_rerun")),
    Mutation("report: popularity also counts held-out turns", REPORT,
             'learned = pl.concat([frame for name, frame in pool.items() if name != "gate"])', "learned = turns",
             REPORT_TESTS),
    Mutation("report: popularity also counts the gate's turns", REPORT,
             'for name, frame in pool.items() if name != "gate"])', "for name, frame in pool.items()])", REPORT_TESTS),
    # --- the promotion gate and promotion
    Mutation("gate: a round's non-finite weights are not reported to the gate", "training/alignment_round.py",
             "finite = weights_finite(retriever.model)", "finite = True", ("tests/test_alignment_gate.py",)),
    Mutation("gate: weights_finite always true", "training/alignment_round.py",
             "return all(bool(torch.isfinite(p).all()) for p in model.parameters())", "return True",
             ("tests/test_alignment_gate.py",)),
    Mutation("gate: the verdict ignores non-finite weights", "training/promotion.py",
             "if not weights_finite:", "if False:", ("tests/test_alignment_gate.py",)),
    Mutation("promote(): promotes a round that failed the gate", "training/promotion.py",
             'if not record.get("gate_passed"):', "if False:", ("tests/test_layout.py",)),
    Mutation("latest_passed_round: the oldest passed round", "training/promotion.py",
             "for name, record in reversed(list(round_records(rounds_dir(home)))):",
             "for name, record in list(round_records(rounds_dir(home))):", ("tests/test_layout.py",)),
    Mutation("latest_passed_round: ignores the verdict", "training/promotion.py",
             'if record.get("gate_passed"):\n            return name', "if record:\n            return name",
             ("tests/test_layout.py",)),
    Mutation("gate: promoted on the mean gain, without the paired bootstrap bound", "training/promotion.py",
             "passed = lower >= rule.min_delta", "passed = gain >= rule.min_delta", ("tests/test_alignment_gate.py",)),
    Mutation("gate: decides on a gate slice of any size", "training/promotion.py",
             "if len(before) < rule.min_turns:", "if False:", ("tests/test_alignment_gate.py",)),
    # --- the alignment round's RL term
    Mutation("round: the policy runs with dropout, the sampler and the reference without",
             "training/round_optimisation.py",
             "model.eval()  # no dropout: the policy is the same function as the sampler and the reference",
             "model.train()",
             ("tests/test_alignment_round.py::test_policy_equals_sampler_and_reference_at_step_zero_despite_dropout",)),
    Mutation("round: set log-probabilities from all films minus the drawn mass in float32", "training/alignment.py",
             "    floor = torch.finfo(logits.dtype).min\n"
             "    outside = logits.clamp(min=floor).unsqueeze(1).expand(batch, groups, logits.shape[1]).scatter(-1, sets, floor)\n"
             "    rest = torch.logsumexp(outside, dim=-1)\n",
             "    total = torch.logsumexp(logits, dim=-1).view(batch, 1, 1)\n"
             "    drawn = torch.logcumsumexp(chosen, dim=-1)\n"
             "    drawn_before = torch.cat([torch.full_like(drawn[..., :1], -math.inf), drawn[..., :-1]], dim=-1)\n"
             "    return chosen - (total + torch.log1p(-torch.exp(drawn_before - total).clamp(max=1.0 - 1e-6)))\n"
             "    rest = None\n",
             ("tests/test_alignment_losses.py::test_draw_log_probs_match_brute_force_on_peaked_logits",)),
    # --- blocking checks
    _checks("vectors_row_count_matches_corpus", "assets/vectors.py", "rows == corpus_ids.height", BLOCKING),
    _checks("vectors_ids_in_corpus", "assets/vectors.py", "not unknown", BLOCKING),
    _checks("vectors_dimension", "assets/vectors.py", "store.dimension() == expected", BLOCKING),
    _checks("vectors_finite_nonzero", "assets/vectors.py", "not bad", BLOCKING),
    _checks("great_expectations_suite", "assets/corpus.py", "outcome.success", BLOCKING),
    _checks("targets_in_corpus", "assets/interactions.py", "no_target == 0 and unknown == 0", BLOCKING),
    _checks("movie_id_unique", "assets/corpus.py", "duplicates.is_empty()", ("tests/test_corpus_assets.py::test_checks_reject_a_bad_corpus_file",)),
    _checks("title_not_empty", "assets/corpus.py", "empty.is_empty()", ("tests/test_corpus_assets.py::test_checks_reject_a_bad_corpus_file",)),
    _checks("year_in_range", "assets/corpus.py", "bad.is_empty()", ("tests/test_corpus_assets.py::test_checks_reject_a_bad_corpus_file",)),
    _checks("row_count_not_shrinking", "assets/corpus.py", "row_count_ok(current, previous)",
            ("tests/test_corpus_assets.py::test_shrinking_corpus_fails_the_blocking_row_count_check",)),
    _checks("titles_decoded_cleanly", "assets/corpus.py", "garbled_titles_ok(garbled.height, corpus.height)",
            ("tests/test_hostile_corpus.py",)),
    _checks("no_films_split_from_previous", "assets/corpus.py", "split_films_ok(int(split), int(films))",
            ("tests/test_hostile_corpus.py",)),
    _checks("quarantine_share_under_limit", "assets/corpus.py", "share <= QUARANTINE_MAX_SHARE",
            ("tests/test_corpus_assets.py::test_quarantine_share_check_fails_above_its_limit",)),
    _checks("user_sequences_link_rate / conversation_turns_link_rate", "assets/interactions.py", "not failing",
            ("tests/test_interactions_assets.py::test_checks_fail_on_low_link_rates",)),
    _checks("splits_disjoint", "assets/interactions.py", "overlap.is_empty()",
            ("tests/test_interactions_assets.py::test_splits_disjoint_check_fails_on_a_dialogue_in_two_splits",)),
    # --- the retriever's test metrics
    Mutation("pretraining: test metrics scored on the validation film", "training/pretraining.py",
             "[test[i] for i in rows]", "[val[i] for i in rows]", ("tests/test_fit.py",)),
    Mutation("pretraining: test history without the validation film", "training/pretraining.py",
             "[train[i] + val[i] for i in rows]", "[train[i] for i in rows]", ("tests/test_fit.py",)),
    # --- stable ids, linking, metrics
    Mutation("rar: ids hashed differently", "corpus_build/movie_text.py", "hashlib.sha1(", "hashlib.md5(",
             ("tests/test_movie_text.py",)),
    Mutation("rar: ids keyed without the year separator", "corpus_build/movie_text.py",
             "f\"{title_key(title)}|{year or ''}\"", "f\"{title_key(title)}{year or ''}\"", ("tests/test_movie_text.py",)),
    Mutation("linker: fuzzy threshold 88 -> 78", "corpus_build/linking.py",
             "DEFAULT_FUZZY_THRESHOLD = 88.0", "DEFAULT_FUZZY_THRESHOLD = 78.0", ("tests/test_linking.py",)),
    Mutation("linker: fuzzy threshold 88 -> 95", "corpus_build/linking.py",
             "DEFAULT_FUZZY_THRESHOLD = 88.0", "DEFAULT_FUZZY_THRESHOLD = 95.0", ("tests/test_linking.py",)),
    Mutation("turn metrics: NDCG ideal without the min(|T|, k) cap", "training/evaluation_protocol.py",
             "for r in range(min(len(target_set), k)))", "for r in range(len(target_set)))", ("tests/test_evaluation.py",)),
    Mutation("ranking metrics: NDCG ideal without the min(|T|, k) cap", "training/ranking_metrics.py",
             # the ideal DCG over every target (positions past k included) instead of the first min(|T|, k)
             "positions = torch.arange(k, dtype=torch.float32, device=ranks.device)\n"
             "        ideal_weights = 1.0 / torch.log2(positions + 2.0)\n"
             "        ideal = (ideal_weights.unsqueeze(0) * (positions.unsqueeze(0) < ideal_count.unsqueeze(1))).sum(1)",
             "positions = torch.arange(max(k, int(n_targets.max())), dtype=torch.float32, device=ranks.device)\n"
             "        ideal_weights = 1.0 / torch.log2(positions + 2.0)\n"
             "        ideal = (ideal_weights.unsqueeze(0) * (positions.unsqueeze(0) < n_targets.unsqueeze(1))).sum(1)",
             ("tests/test_ranking_metrics.py",)),
    # --- the CLI
    Mutation("CLI: the least trained retriever served first", "training/promotion.py",
             "    for system in preference(kind):\n        path = checkpoint_path(home, system)",
             "    for system in reversed(preference(kind)):\n        path = checkpoint_path(home, system)",
             ("tests/test_layout.py",)),
    Mutation("CLI: rar materialize succeeds whatever the run did", "rar_pipeline/cli.py",
             "    if not run.is_success:\n        sys.exit(1)", "    if False:\n        sys.exit(1)",
             ("tests/test_alignment_assets.py::test_rar_materialize_runs_a_round_headless_and_survives_a_rejection",)),
    Mutation("aligned_retriever: promotes a round the gate rejected", "assets/alignment.py",
             '    if record.get("gate_passed"):\n        pointer = promote(', '    if True:\n        pointer = promote(',
             ("tests/test_alignment_assets.py::test_round_gate_promotion_report_and_rerun",)),
]


def mutmut_mutation(name: str, tests: tuple[str, ...]) -> Mutation:
    """A mutant of a mutmut run (``mutmut show NAME``, run from this repository) as a :class:`Mutation`:
    the hunk's context and removed lines become its added lines (indented like a method when need be)."""
    shown = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=REPO, capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, check=True).stdout
    lines = shown.splitlines()
    path = next(line[4:].strip() for line in lines if line.startswith("--- "))
    hunk = lines[next(i for i, line in enumerate(lines) if line.startswith("@@")) + 1:]
    old = "\n".join(line[1:] for line in hunk if line[:1] in (" ", "-"))
    new = "\n".join(line[1:] for line in hunk if line[:1] in (" ", "+"))
    source = (REPO / path).read_text()
    if source.count(old) != 1:  # a method: mutmut shows it dedented
        indent = lambda text: "\n".join("    " + line if line else line for line in text.split("\n"))  # noqa: E731
        old, new = indent(old), indent(new)
    return Mutation(f"mutmut {name}", path, old, new, tests)


def copy_repository(destination: Path) -> None:
    """The working tree as git sees it (tracked and untracked, not ignored files)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for relative in filter(None, listed):
        source = REPO / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def run_tests(copy: Path, tests: tuple[str, ...], timeout: int) -> tuple[int, float, str]:
    """pytest on ``tests`` in ``copy`` (every marker); (exit code, seconds, last lines of output)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "HF_HUB_OFFLINE": "1",
           "RAR_TEST_DATA": os.environ.get("RAR_TEST_DATA", str(REPO.parent / "shared" / "data"))}
    started = time.monotonic()
    try:
        done = subprocess.run(["nice", "-n", "10", sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                               *tests], cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        code, output = -1, f"timed out after {timeout} s\n{expired.stdout or ''}"
    return code, time.monotonic() - started, "\n".join(str(output).strip().splitlines()[-3:])


def apply(copy: Path, mutation: Mutation) -> str | None:
    """Plant ``mutation`` in ``copy``; the reason it cannot be planted, or None."""
    path = copy / mutation.path
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        return f"the text to mutate occurs {count} times in {mutation.path}"
    path.write_text(text.replace(mutation.old, mutation.new))
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=[], help="mutations whose name contains one of these")
    parser.add_argument("--no-baseline", action="store_true", help="skip running the tests on the unmutated copy")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per pytest run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--check", action="store_true", help="only say whether each mutation still applies")
    parser.add_argument("--mutmut", nargs="*", default=[], metavar="NAME",
                        help="instead of the list: these mutants of a mutmut run (e.g. survivors, against new tests)")
    parser.add_argument("--tests", nargs="*", default=[], help="with --mutmut: the tests to run")
    args = parser.parse_args()
    if args.mutmut:
        chosen = [mutmut_mutation(name, tuple(args.tests)) for name in args.mutmut]
    else:
        chosen = [m for m in MUTATIONS if not args.only or any(part in m.name for part in args.only)]
    if args.check:
        stale = [(m.name, (REPO / m.path).read_text().count(m.old)) for m in chosen]
        stale = [(name, count) for name, count in stale if count != 1]
        for name, count in stale:
            print(f"stale ({count} matches): {name}")
        print(f"{len(chosen) - len(stale)} of {len(chosen)} mutations apply")
        return 1 if stale else 0
    results = []
    with tempfile.TemporaryDirectory(prefix="rar-mutations-") as folder:
        pristine = Path(folder) / "pristine"
        copy_repository(pristine)
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            code, seconds, tail = run_tests(pristine, tests, args.timeout * 2)
            print(f"baseline: {'pass' if code == 0 else 'FAIL'} in {seconds:.0f} s", file=sys.stderr)
            if code != 0:
                print(tail, file=sys.stderr)
                return 2
        for mutation in chosen:
            copy = Path(folder) / "mutated"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(pristine, copy)
            if (stale := apply(copy, mutation)) is not None:
                results.append({"mutation": mutation.name, "verdict": "stale", "detail": stale, "seconds": 0.0})
            else:
                code, seconds, tail = run_tests(copy, mutation.tests, args.timeout)
                # pytest exits 1 when a test failed; anything else (collection error, time-out) is no verdict
                verdict = "caught" if code == 1 else "uncaught" if code == 0 else f"error ({code})"
                results.append({"mutation": mutation.name, "verdict": verdict, "detail": tail, "seconds": seconds})
            row = results[-1]
            print(f"{row['verdict']:>10}  {row['seconds']:6.0f} s  {mutation.name}", file=sys.stderr)
    caught = sum(r["verdict"] == "caught" for r in results)
    if args.json:
        print(json.dumps({"caught": caught, "total": len(results), "results": results}, indent=2))
    else:
        print(f"\n{caught} of {len(results)} mutations caught")
        for row in results:
            if row["verdict"] != "caught":
                print(f"  {row['verdict']}: {row['mutation']}: {row['detail']}")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
