"""The artefact layout (training.layout), promotion on top of it, and the atomic writers."""

from __future__ import annotations

import json

import pytest

from corpus_build.atomic import atomic_path, copy_file_atomic, write_bytes_atomic, write_json_atomic
from training import layout
from training.promotion import latest_passed_round, promote, round_parent


def _finish_round(home, name: str, passed: bool, parent: str = "sft") -> None:
    folder = layout.round_dir(home, name)
    write_bytes_atomic(f"weights of {name}".encode(), layout.exported_checkpoint(folder))
    write_json_atomic({"round": name, "parent_round": parent, "gate_passed": passed, "gate_ndcg_before": 0.1,
                       "gate_ndcg_after": 0.2 if passed else 0.05}, layout.round_record_path(folder))


def test_rounds_promotion_and_parent(tmp_path):
    home = tmp_path / "home"
    write_bytes_atomic(b"sft weights", layout.checkpoint_path(home, "sft"))
    assert round_parent(home, "lrurec") == (layout.checkpoint_path(home, "sft"), "sft")
    with pytest.raises(FileNotFoundError, match="materialise dialogue_retriever"):
        round_parent(home, "dialogue")
    write_bytes_atomic(b"dialogue weights", layout.checkpoint_path(home, "dialogue"))
    assert round_parent(home, "dialogue") == (layout.checkpoint_path(home, "dialogue"), "dialogue")
    assert latest_passed_round(home) is None
    _finish_round(home, "round-20250101-000000", passed=True)
    _finish_round(home, "round-20250102-000000", passed=True)
    _finish_round(home, "round-20250103-000000", passed=False)
    layout.round_dir(home, "round-20250104-000000").mkdir()  # started, never finished
    assert [name for name, _ in layout.round_records(layout.rounds_dir(home))] == [
        "round-20250101-000000", "round-20250102-000000", "round-20250103-000000"]
    assert layout.finished_round(layout.round_dir(home, "round-20250104-000000")) is None
    assert layout.finished_round(layout.round_dir(home, "round-20250102-000000"))["gate_passed"] is True
    assert latest_passed_round(home) == "round-20250102-000000"
    with pytest.raises(ValueError, match="did not pass"):
        promote(home, "round-20250103-000000")
    pointer = promote(home, "round-20250102-000000")
    assert layout.promoted_record(home) == pointer
    assert layout.checkpoint_path(home, "aligned").read_bytes() == b"weights of round-20250102-000000"
    assert round_parent(home) == (layout.checkpoint_path(home, "aligned"), "round-20250102-000000")
    assert not list(home.rglob("*.tmp"))


def test_atomic_writers_leave_the_old_file_on_failure(tmp_path):
    target = write_json_atomic({"a": 1}, tmp_path / "sub" / "record.json")
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        write_json_atomic({"a": object()}, target)  # not JSON: the old record stays whole
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    copy = copy_file_atomic(target, tmp_path / "copy.json")
    assert copy.read_bytes() == target.read_bytes()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["copy.json", "record.json", "sub"]


def test_the_current_retriever_is_the_most_trained_one(tmp_path):
    """`rar recommend` serves aligned > sft > pretrained: three real checkpoints with known orders."""
    from retriever_fixtures import fixed_order_checkpoint

    from training.promotion import load_current_retriever

    films = ["tt0000001", "tt0000002", "tt0000003"]
    home = tmp_path / "home"
    assert load_current_retriever(home) is None
    fixed_order_checkpoint(layout.checkpoint_path(home, "pretrained"), films, films)
    fixed_order_checkpoint(layout.checkpoint_path(home, "sft"), films, films[::-1])
    current = load_current_retriever(home)
    assert current.name == "LRURec (sft)" and [m for m, _ in current.retrieve([], k=3)] == films[::-1]
    fixed_order_checkpoint(layout.checkpoint_path(home, "aligned"), films, [films[1], films[0], films[2]])
    current = load_current_retriever(home)
    assert current.name == "LRURec (aligned)" and current.retrieve([], k=1)[0][0] == films[1]
    # the device reaches the model ("meta": a device every machine has, distinct from the default cpu)
    assert load_current_retriever(home, device="meta").device.type == "meta"


def test_the_layout_is_the_documented_one(tmp_path):
    """The folder layout of training/layout.py's docstring: other tools and older homes rely on it."""
    home = tmp_path
    assert layout.checkpoint_path(home, "sft") == home / "retriever/sft/retriever.pt"
    run = layout.run_dir(layout.system_dir(home, "pretrained"), "abc123")
    assert run == home / "retriever/pretrained/checkpoints-abc123"
    assert layout.last_checkpoint(run) == run / "last.pt" and layout.best_checkpoint(run) == run / "best.pt"
    assert layout.promoted_pointer(home) == home / "retriever/aligned/promoted.json"
    folder = layout.round_dir(home, "round-1")
    assert folder == home / "alignment/rounds/round-1"
    assert layout.round_record_path(folder) == folder / "round.json"
    assert layout.rollouts_dir(folder) == folder / "rollouts" and layout.round_epochs_dir(folder) == folder / "epochs"
    assert layout.exported_checkpoint(folder) == folder / "retriever.pt"
    assert layout.evaluation_chart_path(home) == home / "evaluation/report.png"
    assert layout.generator_cache_path(home) == home / "generator_cache/responses.sqlite"
    assert layout.benchmark_dir(home, "quality") == home / "benchmarks/quality"
    assert not list(home.iterdir())  # composing a path creates nothing



def test_the_layout_on_an_object_store():
    """The same layout under an s3:// home (composing paths contacts no server); the response cache is
    a folder of segments there instead of one SQLite file."""
    home = "s3://bucket/rar"
    assert str(layout.checkpoint_path(home, "aligned")) == "s3://bucket/rar/retriever/aligned/retriever.pt"
    assert str(layout.round_dir(home, "round-1")) == "s3://bucket/rar/alignment/rounds/round-1"
    assert str(layout.generator_cache_path(home)) == "s3://bucket/rar/generator_cache/segments"
    assert str(layout.evaluation_chart_path(home)) == "s3://bucket/rar/evaluation/report.png"


def test_round_parent_needs_an_sft_retriever_and_promote_records_the_round(tmp_path):
    home = tmp_path / "home"
    with pytest.raises(FileNotFoundError, match="materialise lrurec_sft before an alignment round"):
        round_parent(home, "lrurec")
    with pytest.raises(FileNotFoundError, match="materialise dialogue_retriever before an alignment round"):
        round_parent(home)
    _finish_round(home, "round-20250101-000000", passed=True, parent="sft")
    pointer = promote(home, "round-20250101-000000")
    assert {k: v for k, v in pointer.items() if k != "promoted_at"} == {
        "round": "round-20250101-000000", "parent_round": "sft", "gate_ndcg_before": 0.1, "gate_ndcg_after": 0.2}
    assert pointer["promoted_at"].endswith("+00:00")  # UTC


def test_a_round_is_finished_only_with_its_record_and_its_checkpoint(tmp_path):
    folder = layout.round_dir(tmp_path, "round-1")
    write_json_atomic({"round": "round-1"}, layout.round_record_path(folder))
    assert layout.finished_round(folder) is None  # a record without the checkpoint
    write_bytes_atomic(b"weights", layout.exported_checkpoint(folder))
    assert layout.finished_round(folder) == {"round": "round-1"}
    other = layout.round_dir(tmp_path, "round-2")
    write_bytes_atomic(b"weights", layout.exported_checkpoint(other))
    assert layout.finished_round(other) is None  # a checkpoint without the record
