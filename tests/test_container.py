"""The Docker images: the block's as Studio runs it (the container labels the emulated project like the
script does), and the Ray Serve server's (it answers /health and a window, with its token enforced).

Needs images built from the Dockerfiles, named in BLOCK_IMAGE and SERVE_IMAGE (``.ci/run`` builds both
with podman; ``BAKE_MODEL=0`` for the block's: a tiny model is mounted instead of the baked-in weights).
Each test skips while its image is unset. The containers reach the emulators and the test reaches the
server on 127.0.0.1 through ``--network host``.
"""

import json
import os
import shutil
import subprocess

import pytest

from conftest import HF_TOKEN, STUDIO_KEY, standard_samples

IMAGE = os.environ.get("BLOCK_IMAGE")
SERVE_IMAGE = os.environ.get("SERVE_IMAGE")
ENGINE = os.environ.get("CONTAINER_ENGINE", "podman")

needs_block_image = pytest.mark.skipif(not IMAGE, reason="BLOCK_IMAGE is not set: build the image first (see .ci/run)")
needs_serve_image = pytest.mark.skipif(not SERVE_IMAGE, reason="SERVE_IMAGE is not set: build serve/Dockerfile "
                                                               "first (see .ci/run)")

LABELS = "Speech\\nMusic\\nDog (doggo)\\nBark (bark, 0.45)"


@pytest.fixture
def shared_dir(tmp_path, dog_model):
    """A folder the container's non-root user can read: ids.json and the tiny model."""
    folder = tmp_path / "mount"
    shutil.copytree(dog_model, folder / "model")
    (folder / "ids.json").write_text(json.dumps(sorted(s.sample_id for s in standard_samples())))
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def docker_run(shared, args, env):
    """The README's `docker run` line, with podman and the emulators' endpoints."""
    command = [ENGINE, "run", "--rm", "--network", "host", "-v", f"{shared}:/data:ro"]
    for name in env:
        command += ["-e", name]  # values come from this process's env, never from argv
    command += [IMAGE, "--data-ids-file", "/data/ids.json", *args]
    return subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)


def labels_of(studio):
    return {sid: s.structured_labels for sid, s in studio.state.samples.items()}


def reset(studio):
    studio.state.samples.clear()
    studio.state.proposals.clear()
    studio.state.writes.clear()
    for sample in standard_samples():
        studio.state.add(sample)


@needs_block_image
def test_container_local_backend_apply_matches_the_script(studio, hf, run_block, shared_dir, dog_model):
    reset(studio)
    proc = docker_run(shared_dir, ["--audioset-labels", LABELS, "--model", "/data/model", "--win-size-ms", "1000"],
                      {"EI_PROJECT_API_KEY": STUDIO_KEY, "EI_API_ENDPOINT": studio.endpoint})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    in_container = labels_of(studio)
    assert all(in_container.values())
    assert STUDIO_KEY not in proc.stdout + proc.stderr

    reset(studio)
    outside = run_block("--model", str(dog_model), "--win-size-ms", "1000", backend="local", labels=LABELS)
    assert outside.code == 0
    assert labels_of(studio) == in_container


@needs_block_image
def test_container_remote_backend_preview_matches_the_script(studio, hf, run_block, shared_dir):
    reset(studio)
    proc = docker_run(shared_dir, ["--audioset-labels", LABELS, "--backend", "remote", "--inference-url", hf.url,
                                   "--propose-actions", "77"],
                      {"EI_PROJECT_API_KEY": STUDIO_KEY, "EI_API_ENDPOINT": studio.endpoint, "HF_TOKEN": HF_TOKEN,
                       "HF_ENDPOINT": hf.hub})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [w.kind for w in studio.state.writes] == ["propose-changes"] * 3
    in_container = dict(studio.state.proposals)
    assert HF_TOKEN not in proc.stdout + proc.stderr

    reset(studio)
    outside = run_block("--propose-actions", "77", labels=LABELS)
    assert outside.code == 0
    assert studio.state.proposals == in_container


@needs_block_image
def test_container_bad_input_exits_2_with_one_line(studio, shared_dir):
    proc = docker_run(shared_dir, ["--audioset-labels", "Speech", "--win-size-ms", "-1"],
                      {"EI_PROJECT_API_KEY": STUDIO_KEY, "EI_API_ENDPOINT": studio.endpoint})
    assert proc.returncode == 2
    assert "--win-size-ms -1 is out of range" in proc.stderr and "Traceback" not in proc.stderr


@needs_block_image
def test_container_stop_ends_the_run_with_a_summary_within_the_grace(studio, hf, tmp_path):
    """`docker stop` (a cancelled Studio job) sends SIGTERM to the block, which runs as PID 1 there."""
    import time

    from test_faults import done_with, fill_project

    fill_project(studio, 30)
    studio.state.latency_s = 0.05
    hf.state.latency_s = 0.2  # slow enough that the run is mid-way when it is stopped
    mount = tmp_path / "ids"
    mount.mkdir()
    (mount / "ids.json").write_text(json.dumps(sorted(studio.state.samples)))
    for path in (mount, mount / "ids.json"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    name = f"ast-stop-test-{os.getpid()}"
    env = {"EI_PROJECT_API_KEY": STUDIO_KEY, "EI_API_ENDPOINT": studio.endpoint, "HF_TOKEN": HF_TOKEN,
           "HF_ENDPOINT": hf.hub}
    command = [ENGINE, "run", "--rm", "--name", name, "--network", "host", "-v", f"{mount}:/data:ro",
               *[arg for key in env for arg in ("-e", key)], IMAGE, "--data-ids-file", "/data/ids.json",
               "--audioset-labels", "Speech\\nMusic\\nDog", "--backend", "remote", "--inference-url", hf.url,
               "--win-size-ms", "1000", "--concurrency", "2"]
    proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 120
    while len(done_with(studio, 1000)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    stopping = time.monotonic()
    subprocess.run([ENGINE, "stop", "--time", "10", name], capture_output=True, timeout=60)
    out, _ = proc.communicate(timeout=60)
    stop_s = time.monotonic() - stopping
    done = done_with(studio, 1000)
    assert proc.returncode == 1 and stop_s < 10, f"exit {proc.returncode} after {stop_s:.1f} s\n{out}"
    assert 2 <= len(done) < 30 and f"Done: {len(done)} of 30 samples labeled" in out and "Traceback" not in out
    for sid in studio.state.samples:
        assert sid in done or not [w for w in studio.state.writes if w.sample_id == sid], f"{sid} half-written"


SERVE_TOKEN = "serve_secretTokenValue1234567890"
SERVE_READY_TIMEOUT_S = 180.0  # Ray starting inside the container, then the replica loading the model
SERVE_STOP_GRACE_S = 15  # `podman stop` sends SIGTERM, then SIGKILL after this long


@needs_serve_image
def test_server_image_answers_a_window_with_its_token_and_refuses_one_without(shared_dir, tmp_path):
    """The README's `docker run` of the server: the image's entrypoint with --model and a later --port."""
    from serve_client import free_port, post_window, wait_until_healthy

    port, name = free_port(), f"ast-serve-test-{os.getpid()}"
    url = f"http://127.0.0.1:{port}/"
    env = {"SERVE_TOKEN": SERVE_TOKEN, "HF_HUB_OFFLINE": "1"}
    command = [ENGINE, "run", "--rm", "--name", name, "--network", "host", "--memory", "4g", "--shm-size", "2g",
               "-v", f"{shared_dir}:/data:ro", *[arg for key in env for arg in ("-e", key)],
               SERVE_IMAGE, "--model", "/data/model", "--port", str(port)]
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        healthy = wait_until_healthy(url, lambda: proc.poll() is None, SERVE_READY_TIMEOUT_S)
        with_token = post_window(url, SERVE_TOKEN) if healthy else None
        without_token = post_window(url) if healthy else None
    finally:
        subprocess.run([ENGINE, "stop", "--time", str(SERVE_STOP_GRACE_S), name], capture_output=True, timeout=120)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            subprocess.run([ENGINE, "rm", "-f", name], capture_output=True, timeout=60)
            proc.kill()
    output = log.read_text()
    assert healthy, f"no /health 200 within {SERVE_READY_TIMEOUT_S:g} s:\n{output[-3000:]}"
    status, answer = with_token
    assert status == 200 and answer[0]["label"] == "Dog", answer
    assert without_token[0] == 401
    assert proc.returncode == 0, f"exit {proc.returncode} on SIGTERM:\n{output[-3000:]}"
    assert SERVE_TOKEN not in output and "Traceback" not in output
