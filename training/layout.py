"""Where the retriever's artefacts live under ``RAR_HOME``: the one module that composes their paths.

Every other module asks here for a checkpoint, a training run's folder, a round's folder or the
promoted pointer, so moving the artefacts (another folder, an object store) changes this file only::

    retriever/<system>/retriever.pt             the exported retriever of pretrained, sft (the history-only
                                                LRURec), dialogue (the dialogue-aware retriever), aligned
    retriever/<system>/checkpoints-<key>/       one training run of it: last.pt (resume), best.pt
    retriever/aligned/promoted.json             which round is promoted, its parent and gate figures
    alignment/rounds/<round>/                   one alignment round: rollouts/, epochs/ (until it finishes),
                                                retriever.pt, round.json
    evaluation/report.png                       the evaluation report's chart
    generator_cache/responses.sqlite            the generator's response cache (segments/ on an object store)
    text_vectors/                               dialogue and request vectors, cached by text hash
    benchmarks/<name>/                          what a benchmark script keeps between runs

Parquet tables live in ``tables/<name>.parquet`` (the code location names them); movie vectors in LanceDB.
The functions compose paths only: writers create folders as they write (``corpus_build.atomic``).
``home`` may be a folder or an object-store URI: every path is made by ``corpus_build.storage.as_path``,
a ``pathlib.Path`` or a ``upath.UPath`` that composes the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from corpus_build.storage import as_path, is_remote

SYSTEMS = ("aligned", "dialogue", "sft", "pretrained")  # most to least trained
# The fine-tuned system of each retriever kind (RAR_RETRIEVER_KIND) and the asset that writes it.
FINE_TUNED = {"dialogue": ("dialogue", "dialogue_retriever"), "lrurec": ("sft", "lrurec_sft")}
CHECKPOINT_FILE = "retriever.pt"  # an exported retriever (training.retriever.export_retriever)
ROUND_FILE = "round.json"  # a round's record, written last: its presence marks the round finished
PROMOTED_FILE = "promoted.json"
LAST_FILE, BEST_FILE = "last.pt", "best.pt"  # a training run's resume and best-validation checkpoints


def system_dir(home: Path, system: str) -> Path:
    """The folder of one retriever system (``pretrained``, ``sft``, ``dialogue`` or ``aligned``)."""
    return as_path(home) / "retriever" / system


def checkpoint_path(home: Path, system: str) -> Path:
    """The exported retriever of ``system``."""
    return exported_checkpoint(system_dir(home, system))


def exported_checkpoint(folder: Path) -> Path:
    """The exported retriever inside ``folder`` (a system's folder or a round's)."""
    return as_path(folder) / CHECKPOINT_FILE


def run_dir(folder: Path, key: str) -> Path:
    """The checkpoints of one training run inside ``folder``, named by its run key (inputs + settings)."""
    return as_path(folder) / f"checkpoints-{key}"


def last_checkpoint(run: Path) -> Path:
    """A training run's checkpoint after its latest epoch (model, optimizer, counters, RNG)."""
    return as_path(run) / LAST_FILE


def best_checkpoint(run: Path) -> Path:
    """A training run's checkpoint of its best validation."""
    return as_path(run) / BEST_FILE


def promoted_pointer(home: Path) -> Path:
    """The record of which round the aligned retriever is."""
    return system_dir(home, "aligned") / PROMOTED_FILE


def promoted_record(home: Path) -> dict | None:
    """The promoted round's record (round, parent_round, promoted_at, gate figures), or None."""
    pointer = promoted_pointer(home)
    return json.loads(pointer.read_text()) if pointer.is_file() else None


def rounds_dir(home: Path) -> Path:
    """The folder holding one folder per alignment round."""
    return as_path(home) / "alignment" / "rounds"


def round_dir(home: Path, round_name: str) -> Path:
    return rounds_dir(home) / round_name


def round_record_path(round_folder: Path) -> Path:
    return as_path(round_folder) / ROUND_FILE


def rollouts_dir(round_folder: Path) -> Path:
    """A round's stored rollouts, one Parquet part per batch."""
    return as_path(round_folder) / "rollouts"


def round_epochs_dir(round_folder: Path) -> Path:
    """An unfinished round's resume point: ``last.pt`` after its latest optimisation epoch."""
    return as_path(round_folder) / "epochs"


def finished_round(round_folder: Path) -> dict | None:
    """The record of a finished round (its checkpoint and ``round.json`` exist), else None."""
    record = round_record_path(round_folder)
    if record.is_file() and exported_checkpoint(round_folder).is_file():
        return json.loads(record.read_text())
    return None


def round_records(rounds: Path) -> Iterator[tuple[str, dict]]:
    """(name, record) of every round under ``rounds`` that wrote its record, in round order (names sort
    by time)."""
    for record_file in sorted(as_path(rounds).glob(f"*/{ROUND_FILE}"), key=lambda path: path.parent.name):
        yield record_file.parent.name, json.loads(record_file.read_text())


def evaluation_chart_path(home: Path) -> Path:
    return as_path(home) / "evaluation" / "report.png"


def generator_cache_path(home: Path) -> Path:
    """The response cache: a SQLite file, or on an object store a folder of immutable segments
    (``training.generator.cache``)."""
    folder = as_path(home) / "generator_cache"
    return folder / "segments" if is_remote(home) else folder / "responses.sqlite"


def benchmark_dir(home: Path, name: str) -> Path:
    return as_path(home) / "benchmarks" / name


def text_vectors_dir(home: Path) -> Path:
    """The cache of embedded dialogue and request texts (:class:`training.text_cache.TextVectorCache`)."""
    return as_path(home) / "text_vectors"
