"""Where retriever checkpoints live, which round is promoted, and the current retriever.

Layout under ``RAR_HOME``::

    retriever/pretrained/retriever.pt    lrurec_pretrained
    retriever/sft/retriever.pt           lrurec_sft (the SFT-only baseline; the first round's parent)
    alignment/rounds/<round>/            one alignment round: rollouts/, retriever.pt, round.json
    retriever/aligned/retriever.pt       the promoted round's checkpoint (aligned_retriever)
    retriever/aligned/promoted.json      which round it is, its parent and gate figures
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

SYSTEMS = ("aligned", "sft", "pretrained")  # most to least trained


def checkpoint_path(home: Path, system: str) -> Path:
    return Path(home) / "retriever" / system / "retriever.pt"


def rounds_dir(home: Path) -> Path:
    return Path(home) / "alignment" / "rounds"


def promoted_record(home: Path) -> dict | None:
    pointer = Path(home) / "retriever" / "aligned" / "promoted.json"
    return json.loads(pointer.read_text()) if pointer.is_file() else None


def round_parent(home: Path) -> tuple[Path, str]:
    """The checkpoint a new round starts from: the promoted round, else the SFT retriever."""
    record = promoted_record(home)
    if record is not None:
        return checkpoint_path(home, "aligned"), record["round"]
    sft = checkpoint_path(home, "sft")
    if not sft.is_file():
        raise FileNotFoundError(f"{sft} not found: materialise lrurec_sft before an alignment round")
    return sft, "sft"


def latest_passed_round(home: Path) -> str | None:
    """The newest finished round whose gate passed (round names sort by time)."""
    for round_dir in sorted(rounds_dir(home).glob("*"), reverse=True):
        record_file = round_dir / "round.json"
        if record_file.is_file() and json.loads(record_file.read_text()).get("gate_passed"):
            return round_dir.name
    return None


def promote(home: Path, round_name: str) -> dict:
    """Make ``round_name`` the aligned retriever (checkpoint copied atomically, then the pointer)."""
    round_dir = rounds_dir(home) / round_name
    record = json.loads((round_dir / "round.json").read_text())
    if not record.get("gate_passed"):
        raise ValueError(f"{round_name} did not pass the promotion gate; it cannot be promoted")
    target = checkpoint_path(home, "aligned")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(round_dir / "retriever.pt", tmp)
    os.replace(tmp, target)
    pointer = {
        "round": round_name, "parent_round": record["parent_round"], "promoted_at": datetime.now(timezone.utc).isoformat(),
        "gate_ndcg_before": record["gate_ndcg_before"], "gate_ndcg_after": record["gate_ndcg_after"],
    }
    pointer_tmp = target.with_name(".promoted.json.tmp")
    pointer_tmp.write_text(json.dumps(pointer, indent=2))
    os.replace(pointer_tmp, target.with_name("promoted.json"))
    return pointer


def load_current_retriever(settings, device: str = "cpu"):
    """The most trained retriever that exists (aligned > sft > pretrained), named, or None."""
    from training.retriever import Retriever

    for system in SYSTEMS:
        path = checkpoint_path(settings.home, system)
        if path.is_file():
            retriever = Retriever.from_checkpoint(path, device=device)
            retriever.name = f"LRURec ({system})"
            return retriever
    return None
