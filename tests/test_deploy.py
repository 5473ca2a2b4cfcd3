"""The deployment paths: the executor setting, and the Kubernetes step pods that dagster-k8s builds for
the GPU steps (rendered with its own job-spec builder, never sent to a cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rar_pipeline.execution import GPU_STEPS

REPO = Path(__file__).resolve().parents[1]

# Renders the step pod of every op of the main job with dagster-k8s: the container context the
# k8s executor builds from its configuration, merged with the op's dagster-k8s/config tags, as
# K8sStepHandler does, then construct_dagster_k8s_job. Prints {op: pod spec} as JSON.
RENDER = r"""
import json
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job,
                             get_k8s_job_name, get_user_defined_k8s_config)
from rar_pipeline.definitions import defs
from rar_pipeline.execution import k8s_executor_config

RUN_ID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
job = defs.resolve_job_def("main")
assert job.executor_def.name == "k8s", job.executor_def.name
config = k8s_executor_config()
executor_context = K8sContainerContext(
    env_vars=config["env_vars"], env_secrets=config["env_secrets"],
    run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config["step_k8s_config"]))
pods = {}
for op in job.graph.iterate_op_defs():
    context = executor_context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(op.tags)))
    job_spec = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image="rar-pipeline:test", dagster_home="/opt/dagster/dagster_home",
                            instance_config_map="dagster-instance"),
        args=["dagster", "api", "execute_step"], job_name=f"dagster-step-{get_k8s_job_name(RUN_ID, op.name)}",
        pod_name=f"dagster-step-{get_k8s_job_name(RUN_ID, op.name)}", component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/op": op.name}, env_vars=[{"name": "DAGSTER_RUN_STEP_KEY", "value": op.name}])
    pods[op.name] = job_spec.spec.template.spec.to_dict()
print(json.dumps(pods, default=str))
"""

# The ops of the GPU steps: movie_vectors embeds in its embed_vector_shard op, the others are one op each.
GPU_OPS = tuple("embed_vector_shard" if step == "movie_vectors" else step for step in GPU_STEPS)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAR_", "AWS_", "DAGSTER_"))}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def test_executor_setting_picks_the_executor():
    from rar_pipeline.execution import executor
    from rar_pipeline.settings import Settings

    for name in ("multiprocess", "in_process", "k8s"):
        assert executor(Settings(executor=name)).name == name
    out = subprocess.run([sys.executable, "-c", "from rar_pipeline.definitions import defs; "
                          "print(defs.resolve_job_def('main').executor_def.name)"],
                         env=_env(RAR_EXECUTOR="in_process"), capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip().splitlines()[-1] == "in_process"  # the definitions follow RAR_EXECUTOR


@pytest.mark.slow
def test_gpu_steps_render_k8s_pods_with_a_gpu_and_the_object_store_settings(tmp_path):
    env = _env(
        RAR_EXECUTOR="k8s", RAR_HOME="s3://rar-artefacts/prod", RAR_PROFILE="full",
        RAR_K8S_ENV_SECRETS='["rar-object-store"]',
        RAR_K8S_GPU_RESOURCES='{"requests": {"nvidia.com/gpu": "1", "cpu": "6"}, "limits": {"nvidia.com/gpu": "1"}}',
        AWS_ENDPOINT_URL="https://minio.storage.svc:9000", AWS_REGION="eu-west-1",
        AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="not-in-any-pod-spec",
    )
    out = subprocess.run([sys.executable, "-c", RENDER], env=env, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    pods = json.loads(out.stdout.strip().splitlines()[-1])
    assert "not-in-any-pod-spec" not in out.stdout and "AKIDEXAMPLE" not in out.stdout
    for op, pod in pods.items():
        container = pod["containers"][0]
        resources = container["resources"]
        env_vars = {item["name"]: item["value"] for item in container["env"] if item.get("value") is not None}
        assert env_vars["RAR_HOME"] == "s3://rar-artefacts/prod", op
        assert env_vars["AWS_ENDPOINT_URL"] == "https://minio.storage.svc:9000" and env_vars["AWS_REGION"] == "eu-west-1"
        assert [source["secret_ref"]["name"] for source in container["env_from"]] == ["rar-object-store"], op
        assert not pod.get("volumes"), f"{op} mounts a volume: artefacts live on the object store"
        if op in GPU_OPS:
            assert resources["limits"]["nvidia.com/gpu"] == "1" and resources["requests"]["cpu"] == "6", op
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule", "toleration_seconds": None,
                    "value": None} in pod["tolerations"], op
        else:
            assert "nvidia.com/gpu" not in json.dumps(resources), op
            assert resources["requests"] == {"cpu": "1", "memory": "4Gi"}, op
    assert set(GPU_OPS) <= set(pods)


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["multiprocess", "k8s"])
def test_definitions_validate_in_both_executor_modes(executor, tmp_path):
    """`dagster definitions validate` as a deployment runs it, with RAR_HOME on an object store."""
    dagster = Path(sys.executable).with_name("dagster")
    out = subprocess.run([str(dagster), "definitions", "validate", "-m", "rar_pipeline.definitions"],
                         env=_env(RAR_EXECUTOR=executor, RAR_HOME="s3://rar-artefacts/prod", DAGSTER_HOME=str(tmp_path)),
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def _settings_from(env: dict[str, str], monkeypatch):
    from rar_pipeline.settings import Settings

    for name in [n for n in os.environ if n.startswith("RAR_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_deployment_files_put_artefacts_on_the_object_store_and_steps_in_pods(monkeypatch):
    import yaml

    cloud_text = (REPO / "dagster_cloud.yaml").read_text()
    k8s = yaml.safe_load(cloud_text)["locations"][0]["container_context"]["k8s"]
    cloud = _settings_from(dict(item.split("=", 1) for item in k8s["env_vars"]), monkeypatch)
    helm_text = (REPO / "deploy" / "helm-values.yaml").read_text()
    deployment = yaml.safe_load(helm_text)["dagster-user-deployments"]["deployments"][0]
    helm = _settings_from({item["name"]: item["value"] for item in deployment["env"]}, monkeypatch)
    for settings, secrets in ((cloud, k8s["env_secrets"]), (helm, [s["name"] for s in deployment["envSecrets"]])):
        assert settings.executor == "k8s" and settings.remote and str(settings.home).startswith("s3://")
        assert settings.k8s_env_secrets == secrets == ["rar-object-store"]
        assert settings.k8s_gpu_resources["requests"]["nvidia.com/gpu"] == "1"
    assert not _keys_naming("volume", yaml.safe_load(cloud_text)) and not _keys_naming("volume", yaml.safe_load(helm_text))
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "rar_pipeline.definitions"]


def _keys_naming(word: str, tree) -> list[str]:
    """Every mapping key in ``tree`` (nested dicts and lists) that contains ``word``."""
    if isinstance(tree, dict):
        return [k for k in tree if word in str(k).lower()] + [k for v in tree.values() for k in _keys_naming(word, v)]
    if isinstance(tree, list):
        return [k for v in tree for k in _keys_naming(word, v)]
    return []
