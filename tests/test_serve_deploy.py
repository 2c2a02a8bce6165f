"""The server's production files: the Serve configs (serve/config.yaml, serve/config-gpu.yaml) and the
KubeRay manifest (serve/kuberay.yaml) are configs Ray accepts, say what they mean (no key Ray would
silently ignore), agree with each other and with serve.app, and serve/config.yaml runs once with
`serve run` from the repository root, leaving no Ray process behind.

Ray is imported plainly: without serve/requirements.txt these tests fail rather than skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import ray
import yaml
from ray.serve import Application
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import (DeploymentSchema, HTTPOptionsSchema, RayActorOptionsSchema, ServeApplicationSchema,
                              ServeDeploySchema)

from conftest import ROOT
from inference_emulator import LABELS
from serve_client import free_port, post_window, wait_until_healthy
from labeler.core import ConfigError
from serve.app import APP_NAME, build, ongoing_requests_for

SERVE_DIR = ROOT / "serve"
CONFIGS = {"cpu": SERVE_DIR / "config.yaml", "gpu": SERVE_DIR / "config-gpu.yaml"}
MANIFEST = SERVE_DIR / "kuberay.yaml"
SERVE_CLI = Path(sys.executable).with_name("serve")  # what pip installs beside python with ray[serve]
READY_TIMEOUT_S = 120.0  # a fresh local Ray cluster, the Serve controller, then the replica loading the model
STOP_TIMEOUT_S = 60.0  # `serve run` on Ctrl-C: the replica's graceful stop, then the cluster's processes
SETTLE_S = 15.0  # processes the driver stopped may take a moment to leave /proc


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def manifest_service() -> dict:
    return next(doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc and doc["kind"] == "RayService")


def manifest_serve_config() -> dict:
    return yaml.safe_load(manifest_service()["spec"]["serveConfigV2"])


def serve_config(name: str) -> dict:
    """One of the Serve configs: a file of CONFIGS, or the manifest's serveConfigV2 ("kuberay")."""
    return manifest_serve_config() if name == "kuberay" else load(CONFIGS[name])


SERVE_CONFIGS = [*CONFIGS, "kuberay"]


def our_app(config: dict) -> dict:
    (app,) = [a for a in config["applications"] if a["name"] == APP_NAME]
    return app


def our_deployment(config: dict) -> dict:
    (deployment,) = our_app(config)["deployments"]
    return deployment


@pytest.mark.parametrize("name", SERVE_CONFIGS)
def test_config_validates_as_a_serve_deploy_config(name):
    config = ServeDeploySchema.model_validate(serve_config(name))
    (app,) = config.applications
    assert (app.name, app.route_prefix, app.import_path) == (APP_NAME, "/", "serve.app:build")
    assert [d.name for d in app.deployments] == ["AudioClassifier"]


def unknown_keys(config: dict) -> list[str]:
    """Keys Ray's schemas do not define: Ray accepts and ignores them, so a misspelt option does nothing."""
    def extra(where: str, section: dict, model) -> list[str]:
        return [f"{where}.{key}" for key in section if key not in model.model_fields]

    found = extra("config", config, ServeDeploySchema) + extra("http_options", config.get("http_options", {}),
                                                               HTTPOptionsSchema)
    for app in config["applications"]:
        found += extra(app["name"], app, ServeApplicationSchema)
        for dep in app.get("deployments", []):
            where = f"{app['name']}.{dep['name']}"
            found += extra(where, dep, DeploymentSchema)
            found += extra(f"{where}.autoscaling_config", dep.get("autoscaling_config") or {}, AutoscalingConfig)
            found += extra(f"{where}.ray_actor_options", dep.get("ray_actor_options", {}), RayActorOptionsSchema)
    return found


def test_a_misspelt_key_is_caught_although_ray_accepts_it():
    config = load(CONFIGS["cpu"])
    our_deployment(config)["max_ongoing_request"] = 16
    ServeDeploySchema.model_validate(config)  # Ray's own check lets it through...
    assert unknown_keys(config) == ["audio-labeler.AudioClassifier.max_ongoing_request"]  # ...this one does not


@pytest.mark.parametrize("name", SERVE_CONFIGS)
def test_every_key_of_the_config_is_one_ray_serve_reads(name):
    assert unknown_keys(serve_config(name)) == []


def test_the_kuberay_manifest_serves_config_yaml_unchanged():
    assert manifest_serve_config() == load(CONFIGS["cpu"])


@pytest.mark.parametrize("name", CONFIGS)
def test_a_replica_takes_a_full_batch_and_the_next_one(name):
    """Ray's default max_ongoing_requests (5) would cap every batch at 5 windows."""
    config = load(CONFIGS[name])
    batch_size = our_app(config)["args"]["batch_size"]
    assert our_deployment(config)["max_ongoing_requests"] >= ongoing_requests_for(batch_size) > batch_size


@pytest.mark.parametrize("name", CONFIGS)
def test_the_application_builder_accepts_the_configs_args_without_a_cluster(name):
    connected = ray.is_initialized()  # False unless another test module left Ray running in this process
    assert isinstance(build(our_app(load(CONFIGS[name]))["args"]), Application)
    assert ray.is_initialized() == connected, "building the application started Ray"


def test_the_application_builder_names_an_unknown_arg():
    args = {**our_app(load(CONFIGS["cpu"]))["args"], "batch_sise": 8}
    with pytest.raises(ConfigError) as caught:
        build(args)
    message = str(caught.value)
    assert "'batch_sise'" in message and "\n" not in message


def test_kuberay_containers_take_the_token_from_a_secret():
    cluster = manifest_service()["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    for pod in pods:
        for container in pod["template"]["spec"]["containers"]:
            (token,) = [e for e in container.get("env", []) if e["name"] == "SERVE_TOKEN"]
            assert "value" not in token and token["valueFrom"]["secretKeyRef"]["key"], container["name"]


def test_kuberay_worker_pods_have_the_cpus_of_one_replica():
    """Ray counts a pod's CPU limit as its CPUs: one replica's num_cpus per pod, no core left idle."""
    num_cpus = our_deployment(manifest_serve_config())["ray_actor_options"]["num_cpus"]
    for group in manifest_service()["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        assert float(container["resources"]["limits"]["cpu"]) == num_cpus, group["groupName"]


# --- serve run -----------------------------------------------------------------------------------


def marked_processes(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker`` (NAME=value): everything a Ray cluster started
    by the test spawned inherits it. Zombies have an empty environment and do not count."""
    needle = f"\0{marker}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in b"\0" + (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile, or not ours to read
                continue
    return found


def processes_left(marker: str, settle_s: float) -> list[int]:
    deadline = time.monotonic() + settle_s
    while (left := marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.fixture
def ray_env():
    """(environment, marker) for a Ray cluster of its own: its own temp folder (so it neither joins nor
    disturbs another local cluster) and a marker variable; any process of it left at the end is killed."""
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    marker_name, marker_value = "AST_SERVE_TEST_RUN", uuid.uuid4().hex
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    env.update(HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=temp_dir, **{marker_name: marker_value})
    marker = f"{marker_name}={marker_value}"
    yield env, marker
    for pid in marked_processes(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(temp_dir, ignore_errors=True)


def single_replica_copy(config: dict, model: Path, port: int) -> dict:
    """The config with a test model, a free port, and one replica of one CPU (no autoscaling)."""
    our_app(config)["args"]["model"] = str(model)
    config["http_options"]["port"] = port
    deployment = our_deployment(config)
    deployment.pop("autoscaling_config")
    deployment["num_replicas"] = 1
    deployment["ray_actor_options"]["num_cpus"] = 1
    return config


def stop(proc: subprocess.Popen) -> float:
    """Ctrl-C, as a user stops `serve run`; seconds until it exited (SIGKILL after STOP_TIMEOUT_S)."""
    started = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return time.monotonic() - started


def test_config_yaml_runs_with_serve_run_from_the_repository_root(tmp_path, dog_model, ray_env):
    env, marker = ray_env
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(single_replica_copy(load(CONFIGS["cpu"]), dog_model, port)))
    log = tmp_path / "serve-run.log"
    url = f"http://127.0.0.1:{port}/"
    with log.open("w") as out:
        proc = subprocess.Popen([str(SERVE_CLI), "run", str(config)], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        healthy = wait_until_healthy(url, lambda: proc.poll() is None, READY_TIMEOUT_S)
        status, answer = post_window(url) if healthy else (None, None)
    finally:
        stop_s = stop(proc)
    output = log.read_text()
    assert healthy, f"no /health 200 within {READY_TIMEOUT_S:g} s:\n{output[-3000:]}"
    assert status == 200, answer
    labels = [entry["label"] for entry in answer]
    scores = [entry["score"] for entry in answer]
    # dog_model's logits: Dog 1, Bark 0, every other class -4, whatever the audio.
    assert labels[:2] == ["Dog", "Bark"] and sorted(labels) == sorted(LABELS)
    assert scores == sorted(scores, reverse=True)
    assert stop_s < STOP_TIMEOUT_S, f"serve run did not stop on Ctrl-C:\n{output[-3000:]}"
    assert processes_left(marker, SETTLE_S) == [], "Ray processes outlived serve run"
