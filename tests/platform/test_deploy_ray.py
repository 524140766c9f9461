"""The Ray deploy recipes, checked without a cluster: the KubeRay RayCluster manifest against
the fields of the ray.io/v1 CRD that can be checked offline, the Slurm script with `bash -n`
and its commands, and the params overlay through the project's own loader."""

from __future__ import annotations

import subprocess

import yaml

from synthfactory.executors import build_executor
from synthfactory.params import load_params
from tests.support import PROJECT_ROOT

RAY_DIR = PROJECT_ROOT / "deploy" / "ray"
# ray.io/v1 RayCluster: the spec keys KubeRay accepts (crd ray.io_rayclusters.yaml, v1.1+).
SPEC_KEYS = {"rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headGroupSpec",
             "workerGroupSpecs", "headServiceAnnotations", "suspend", "managedBy",
             "gcsFaultToleranceOptions"}
HEAD_KEYS = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_KEYS = {"groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
               "rayStartParams", "template", "scaleStrategy", "suspend", "numOfHosts"}


def test_kuberay_manifest_has_a_gpu_worker_group() -> None:
    manifest = yaml.safe_load((RAY_DIR / "kuberay-raycluster.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    spec = manifest["spec"]
    assert set(spec) <= SPEC_KEYS, set(spec) - SPEC_KEYS
    head = spec["headGroupSpec"]
    assert set(head) <= HEAD_KEYS and head["rayStartParams"]["num-gpus"] == "0"
    assert all(isinstance(value, str) for value in head["rayStartParams"].values())  # CRD: strings
    (gpu,) = spec["workerGroupSpecs"]
    assert set(gpu) <= WORKER_KEYS, set(gpu) - WORKER_KEYS
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"] == 64
    assert all(isinstance(value, str) for value in gpu["rayStartParams"].values())
    (container,) = gpu["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == gpu["rayStartParams"]["num-gpus"] == "1"
    # Every pod mounts the shared project (store, params) where the params expect it.
    for template in (head["template"], gpu["template"]):
        (mount,) = template["spec"]["containers"][0]["volumeMounts"]
        assert mount["mountPath"] == "/work"
        claims = {volume["name"]: volume["persistentVolumeClaim"]["claimName"]
                  for volume in template["spec"]["volumes"]}
        assert claims == {mount["name"]: "synthfactory-project"}


def test_ray_params_overlay_builds_the_ray_executor() -> None:
    config = load_params(RAY_DIR / "params.yaml")
    assert config.executor.kind == "ray" and config.executor.ray.working_dir == "/work"
    assert build_executor(config.executor).name == "ray"


def test_slurm_script_parses_and_starts_ray_then_backfills() -> None:
    script = RAY_DIR / "slurm-backfill.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "#SBATCH --nodes=" in text and "#SBATCH --gpus-per-node=" in text
    lines = [line.strip() for line in text.splitlines()]
    head = next(index for index, line in enumerate(lines) if "ray start --head" in line)
    worker = next(index for index, line in enumerate(lines) if 'ray start --address="$RAY_ADDRESS"'
                  in line)
    run = next(index for index, line in enumerate(lines) if line.startswith("synthfactory run"))
    assert head < worker < run
    assert "--params deploy/ray/params.yaml" in lines[run]
    assert "--fan-out auto" in text and 'dagster instance concurrency set gpu "$TOTAL_GPUS"' in text
    assert "ray stop" not in text  # it would end every Ray process of the user on a node
