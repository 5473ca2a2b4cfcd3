"""How runs execute: the Dagster executor (``RAR_EXECUTOR``) and what each step asks Kubernetes for.

- ``multiprocess`` (default): each step in its own process, up to ``RAR_MAX_CONCURRENT_STEPS`` (default:
  the CPU cores) at once. Step processes fork from a server that has already imported the code
  location, so a step does not import Dagster and the assets again, and they end with the run's process
  (``rar_pipeline.step_process``).
- ``k8s``: dagster-k8s' ``k8s_job_executor``, one Kubernetes Job per step. Every step pod gets the
  ``RAR_*`` and non-secret ``AWS_*`` variables of the run (its storage settings) and the secrets named
  in ``RAR_K8S_ENV_SECRETS`` (credentials stay in Kubernetes secrets, never in a pod spec); the GPU steps
  (:data:`GPU_STEPS`) ask for ``RAR_K8S_GPU_RESOURCES`` (``nvidia.com/gpu: 1`` by default) and tolerate
  the usual GPU node taint, every other step for ``RAR_K8S_CPU_RESOURCES``.
- ``in_process``: every step in the run's own process (debugging).
"""

from __future__ import annotations

import os

import dagster as dg

from rar_pipeline.settings import get_settings

# The assets whose steps pay for a GPU: embedding the corpus and training the retriever.
GPU_STEPS = ("movie_vectors", "lrurec_pretrained", "lrurec_sft", "dialogue_retriever", "alignment_round")
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
STEP_KIND_TAG = "rar/step"  # "gpu" on GPU steps: e.g. a tag_concurrency_limits key
# Variables that step pods must never receive in plain text: they come from RAR_K8S_ENV_SECRETS.
SECRET_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAR_GENERATOR_API_KEY")


def gpu_step_tags() -> dict:
    """Op tags of a GPU step: its Kubernetes resources and tolerations (``dagster-k8s/config``)."""
    return {
        STEP_KIND_TAG: "gpu",
        "dagster-k8s/config": {
            "container_config": {"resources": get_settings().k8s_gpu_resources},
            "pod_spec_config": {"tolerations": GPU_TOLERATIONS},
        },
    }


def passed_variables(environ=None) -> list[str]:
    """Names of the run's RAR_* and AWS_* variables that step pods receive as they are (secrets excluded)."""
    environ = os.environ if environ is None else environ
    return sorted(name for name in environ
                  if name.startswith(("RAR_", "AWS_")) and name not in SECRET_VARIABLES)


def k8s_executor_config(settings=None) -> dict:
    """The ``k8s_job_executor`` configuration of these settings (CPU steps' resources, variables, secrets)."""
    settings = settings or get_settings()
    config = {
        "step_k8s_config": {"container_config": {"resources": settings.k8s_cpu_resources}},
        "env_vars": passed_variables(),
        "env_secrets": list(settings.k8s_env_secrets),
    }
    if settings.max_concurrent_steps:
        config["max_concurrent"] = settings.max_concurrent_steps
    return config


def executor(settings=None) -> dg.ExecutorDefinition:
    """The executor ``RAR_EXECUTOR`` names, configured from the settings."""
    settings = settings or get_settings()
    if settings.executor == "in_process":
        return dg.in_process_executor
    if settings.executor == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(k8s_executor_config(settings), name="k8s")
    # step processes fork from a server that has imported the code location (and die with it: step_process)
    preload = ["rar_pipeline.step_process", "rar_pipeline.definitions"]
    config: dict = {"start_method": {"forkserver": {"preload_modules": preload}}}
    if settings.max_concurrent_steps:
        config["max_concurrent"] = settings.max_concurrent_steps
    return dg.multiprocess_executor.configured(config, name="multiprocess")
