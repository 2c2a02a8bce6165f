"""The Ray Serve server (``python -m serve``) as users run it: a real local Ray cluster on 127.0.0.1
serving the trained test AST, called by the block's own remote backend and by plain HTTP.

Ray starts in module-scoped fixtures, once per server, and every server is stopped when the module
ends, so its daemons never run beside the timing-sensitive tests of other modules. These tests
need ``serve/requirements.txt`` installed: without Ray they fail, they do not skip.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import io
import json
import os
import re
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
import ray  # noqa: F401 - fails the module at once when serve/requirements.txt is not installed
import requests
import soundfile

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, noise, silence, tone
from conftest import ROOT
from labeler.audio import encode_audio_16k
from labeler.classifiers import BackendOptions, build_classifier
from labeler.classifiers.local import LocalClassifier
from labeler.models import apply_score_function
from serve_client import free_port
from serve_server import ServeProcess, alive, children_of, command_line
from studio_emulator import EmuSample
from tiny_models import LABELS, label_maps, make_tiny_ctc

SERVE_TOKEN = "serve_secretToken_5551234"
TOLERANCE = 1e-4
MAX_BATCH = 8
BLOCK_CONCURRENCY = 16  # the block's default --concurrency
STOP_LIMIT_S = 10.0
# A signal while ray.init runs is held until Ray is up (its own handler would strand its agents), so
# during the start, Ray's start time (3 s idle here, 5 s or more under load) comes on top.
STARTING_STOP_LIMIT_S = 15.0


@pytest.fixture(scope="module")
def trained_server(trained_ast):
    """The trained AST, one replica, float32, auth on, a 1 MB body limit (the block sends ~45 kB)."""
    server = ServeProcess(trained_ast.path, "--dtype", "float32", "--batch-size", str(MAX_BATCH),
                          "--batch-wait-ms", "50", "--max-body-mb", "1", token=SERVE_TOKEN)
    try:
        yield server.start()
    finally:
        server.kill()


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory):
    """An AST wide and deep enough that a batch of 8 windows of 10.24 s takes about a second here,
    so batches run long enough to watch (its scores are random: only timing is tested with it)."""
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    path = tmp_path_factory.mktemp("slow-ast")
    torch.manual_seed(0)
    config = ASTConfig(hidden_size=192, num_hidden_layers=6, num_attention_heads=4, intermediate_size=384,
                       **label_maps(LABELS))
    ASTForAudioClassification(config).eval().save_pretrained(path)
    ASTFeatureExtractor().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def slow_server(slow_model):
    server = ServeProcess(slow_model, "--dtype", "float32", "--batch-size", str(MAX_BATCH), token=SERVE_TOKEN)
    try:
        yield server.start()
    finally:
        server.kill()


def on_the_wire(window: np.ndarray) -> np.ndarray:
    """The window as the server decodes it: 16-bit FLAC."""
    audio, _ = soundfile.read(io.BytesIO(encode_audio_16k(window)), dtype="float32")
    return audio


def body(window: np.ndarray, **parameters) -> bytes:
    payload = {"inputs": base64.b64encode(encode_audio_16k(window)).decode()}
    if parameters:
        payload["parameters"] = parameters
    return json.dumps(payload).encode()


def post(server: ServeProcess, data: bytes, token: str | None = "own", content_type="application/json"):
    return requests.post(server.url, data=data, headers={**server.headers(token), "Content-Type": content_type},
                         timeout=60)


def remote_through(server: ServeProcess, model_path):
    options = BackendOptions("remote", str(model_path), inference_url=server.url, concurrency=BLOCK_CONCURRENCY,
                             max_wait_s=60.0, dtype="float32")
    classifier, _ = build_classifier(options, "Dog", {"HF_API_KEY": server.token})
    return classifier


def many_samples(count: int, seconds: int) -> list[EmuSample]:
    """Samples of the trained AST's classes in changing order, 16-bit at 16 kHz (so the wire is lossless)."""
    parts = [lambda: tone(SPEECH_HZ, 1, 16000), lambda: tone(MUSIC_HZ, 1, 16000), lambda: tone(DOG_HZ, 1, 16000),
             lambda: noise(1, 16000, amplitude=0.5), lambda: silence(1, 16000)]
    return [EmuSample(500 + i, f"long_{i}.wav", 16000, [concat(*(parts[(i + s) % 5]() for s in range(seconds)))])
            for i in range(count)]


def labels_of(studio) -> dict:
    return {sid: (s.structured_labels, s.is_disabled) for sid, s in studio.state.samples.items()}


def reset(studio, samples) -> None:
    studio.state.samples.clear()
    for sample in samples:
        studio.state.add(sample)


# --- same model, same scores ---------------------------------------------------------------------

def test_scores_through_serve_equal_the_local_backend_on_the_same_audio(trained_server, trained_ast):
    remote = remote_through(trained_server, trained_ast.path)
    try:
        served = remote.classify(trained_ast.windows)
    finally:
        remote.close()
    local = LocalClassifier(str(trained_ast.path), "cpu", "float32")
    reference = local.classify([on_the_wire(w) for w in trained_ast.windows])  # the 16-bit audio the wire carries
    assert np.abs(served - reference).max() <= TOLERANCE
    best = [remote.class_names[i] for i in served.argmax(axis=1)]
    assert best == [local.class_names[i] for i in reference.argmax(axis=1)]
    assert best == trained_ast.labels  # the trained model is right, so a swapped row would show


def test_a_block_run_through_serve_labels_every_sample_as_the_local_backend_does(trained_server, trained_ast,
                                                                                 studio, run_block):
    samples = many_samples(4, 6)
    args = ("--model", str(trained_ast.path), "--dtype", "float32", "--win-size-ms", "1000")
    reset(studio, samples)
    local = run_block(*args, backend="local")
    expected = labels_of(studio)
    reset(studio, samples)
    served = run_block(*args, "--inference-url", trained_server.url, env={"HF_TOKEN": None,
                                                                           "HF_API_KEY": SERVE_TOKEN})
    assert (local.code, served.code) == (0, 0), served.err
    assert labels_of(studio) == expected
    assert all(labels for labels, _ in expected.values())


# --- a server on a network -----------------------------------------------------------------------

@pytest.mark.parametrize("token", [None, "wrong-token", SERVE_TOKEN[:-1]])
def test_a_request_without_the_right_token_gets_401(trained_server, token):
    resp = post(trained_server, body(tone(SPEECH_HZ, 1, 16000)), token=token)
    assert resp.status_code == 401
    assert "bearer token" in resp.json()["error"]


def test_the_right_token_gets_every_class_best_first(trained_server):
    resp = post(trained_server, body(tone(DOG_HZ, 1, 16000)))
    assert resp.status_code == 200
    answer = resp.json()
    assert sorted(item["label"] for item in answer) == sorted(LABELS)
    assert [item["score"] for item in answer] == sorted((item["score"] for item in answer), reverse=True)
    assert answer[0]["label"] == "Dog"


def test_the_token_never_appears_in_the_servers_output_or_rays_log_files(trained_server):
    post(trained_server, body(tone(DOG_HZ, 1, 16000)))
    post(trained_server, body(tone(DOG_HZ, 1, 16000)), token="wrong-token")
    assert SERVE_TOKEN not in trained_server.text()
    logs = [path for path in (trained_server.session_dir() / "logs").rglob("*") if path.is_file()]
    assert any("replica_" in path.name for path in logs)  # the replica's own log (access lines) is among them
    assert not [path for path in logs if SERVE_TOKEN.encode() in path.read_bytes()]


@pytest.mark.parametrize("data, content_type, status", [
    (b"", "application/json", 400),
    (b"{not json", "application/json", 400),
    (b"[" * 100_000, "application/json", 400),  # nested deeper than the JSON parser recurses
    (json.dumps({"inputs": "!!!"}).encode(), "application/json", 400),
    (b"RIFF\x00\x00garbage", "audio/wav", 400),
    (b"\x00" * (2 * 2**20), "audio/wav", 413),  # over --max-body-mb 1
    (b"hello", "text/plain", 415),
])
def test_a_bad_body_gets_a_client_error_and_the_replica_serves_on(trained_server, data, content_type, status):
    resp = post(trained_server, data, content_type=content_type)
    assert resp.status_code == status
    assert resp.json()["error"]
    assert post(trained_server, body(tone(SPEECH_HZ, 1, 16000))).status_code == 200


def test_a_raw_audio_body_is_served_like_the_json_one(trained_server):
    window = tone(MUSIC_HZ, 1, 16000)
    raw = post(trained_server, encode_audio_16k(window), content_type="audio/flac").json()
    assert raw == post(trained_server, body(window)).json()


def test_unknown_routes_and_methods_are_refused(trained_server):
    assert requests.get(trained_server.url + "nowhere", timeout=10).status_code == 404
    assert requests.get(trained_server.url, headers=trained_server.headers(), timeout=10).status_code == 405


def test_health_answers_without_a_token(trained_server):
    resp = requests.get(trained_server.url + "health", timeout=10)
    assert resp.status_code == 200 and resp.json()["classes"] == len(LABELS)


# --- batching ------------------------------------------------------------------------------------

def test_one_batch_applies_each_requests_own_score_function(trained_server):
    """Requests of all three functions, sent at once, share batches; each answer is its own function
    of the same logits (sigmoid and softmax of ``none``'s answer), and top_k cuts each on its own."""
    window = concat(tone(DOG_HZ, 0.5, 16000), tone(SPEECH_HZ, 0.5, 16000))
    asks = [dict(function_to_apply=f, top_k=k) for f, k in
            [("sigmoid", 15), ("softmax", 15), ("none", 15), ("sigmoid", 3), ("softmax", 2), ("none", 15)]]
    for _ in range(3):  # a batch forms from what arrives within --batch-wait-ms: try again if they straggled
        since = time.monotonic()
        barrier = threading.Barrier(len(asks))

        def send(parameters):
            barrier.wait()
            return post(trained_server, body(window, **parameters)).json()

        with cf.ThreadPoolExecutor(len(asks)) as pool:
            answers = list(pool.map(send, asks))
        time.sleep(1.0)  # the replica's log lines reach the driver's output
        if any(b.functions.count(",") >= 2 for b in trained_server.batches(since)):
            break
    else:
        pytest.fail(f"no batch held all three functions: {trained_server.batches()}")
    logits = {item["label"]: item["score"] for item in answers[2]}
    names = list(logits)
    row = np.array([[logits[n] for n in names]], np.float32)
    for parameters, answer in zip(asks, answers):
        expected = dict(zip(names, apply_score_function(row, parameters["function_to_apply"])[0]))
        assert len(answer) == parameters["top_k"]
        assert {item["label"]: item["score"] for item in answer} == pytest.approx(
            {n: expected[n] for n in (item["label"] for item in answer)}, abs=1e-6)


def test_under_the_blocks_concurrency_batches_are_at_least_half_full(slow_server, slow_model, studio, run_block):
    reset(studio, many_samples(6, 10))
    since = time.monotonic()
    result = run_block("--model", str(slow_model), "--inference-url", slow_server.url, "--win-size-ms", "1000",
                       env={"HF_TOKEN": None, "HF_API_KEY": SERVE_TOKEN})
    time.sleep(1.0)
    assert result.code == 0, result.err
    sizes = [b.size for b in slow_server.batches(since)]
    assert sum(sizes) >= 60  # every window of the run went through a logged batch (preflight ones too)
    assert np.mean(sizes) >= min(BLOCK_CONCURRENCY, MAX_BATCH) / 2, sizes


def test_health_answers_while_a_batch_runs_and_the_blocks_requests_fill_the_replica(slow_server):
    """16 windows take two or three batches of about a second; /health, asked half a second in, is
    answered at once, while at least one more batch still has to run."""
    windows = [noise(10.24, 16000, seed=i) for i in range(BLOCK_CONCURRENCY)]
    since = time.monotonic()
    with cf.ThreadPoolExecutor(BLOCK_CONCURRENCY) as pool:
        sent = [pool.submit(lambda w: (post(slow_server, body(w)), time.monotonic()), w) for w in windows]
        time.sleep(0.5)
        asked = time.monotonic()
        health = requests.get(slow_server.url + "health", timeout=10)
        answered = time.monotonic()
        finished = [future.result() for future in sent]
    time.sleep(1.0)
    assert health.status_code == 200 and all(resp.status_code == 200 for resp, _ in finished)
    assert answered - asked < 0.5
    assert max(at for _, at in finished) - answered > 0.5  # windows were still being classified
    assert max(b.ms for b in slow_server.batches(since)) >= 600  # in batches that long


# --- replicas ------------------------------------------------------------------------------------

def test_a_killed_replica_is_replaced_and_the_run_loses_nothing(trained_ast, studio, run_block, capsys):
    samples = many_samples(12, 8)
    args = ("--model", str(trained_ast.path), "--dtype", "float32", "--win-size-ms", "1000")
    reset(studio, samples)
    assert run_block(*args, backend="local").code == 0
    expected = labels_of(studio)
    server = ServeProcess(trained_ast.path, "--dtype", "float32", "--replicas", "2", "--num-cpus", "1",
                          token=SERVE_TOKEN)
    try:
        server.start()
        first = server.replica_pids()
        assert len(first) == 2
        loaded = lambda: [line.text for line in server.snapshot() if "loaded " in line.text]  # noqa: E731
        wait_for(lambda: len(loaded()) == 2, timeout_s=10)  # replicas' log lines reach the driver a moment later
        assert all("batch 8, 1 thread)" in line for line in loaded())  # its num_cpus, not the machine's CPUs
        killed: dict = {}
        since = time.monotonic()

        def kill_one_mid_run():
            while len(server.batches(since)) < 3 and time.monotonic() - since < 60:
                time.sleep(0.01)
            os.kill(first[0], signal.SIGKILL)
            killed["at"] = time.monotonic()

        killer = threading.Thread(target=kill_one_mid_run)
        killer.start()
        reset(studio, samples)
        result = run_block(*args, "--inference-url", server.url, env={"HF_TOKEN": None, "HF_API_KEY": SERVE_TOKEN})
        killer.join()
        assert "at" in killed
        assert result.code == 0, result.err
        assert labels_of(studio) == expected
        replaced = wait_for(lambda: len(server.replica_pids()) == 2
                            and len(set(server.replica_pids()) - set(first)) == 1)
        with capsys.disabled():
            print(f"\nreplica replaced {replaced - killed['at']:.1f} s after it was killed")
        assert not alive(first[0])
    finally:
        server.kill()


def wait_for(condition, timeout_s: float = 60.0) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError("timed out")


# --- starting and stopping -----------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_and_every_ray_process_it_started(trained_ast, signum):
    server = ServeProcess(trained_ast.path, "--dtype", "float32")
    try:
        server.start()
        assert server.replica_pids() and requests.get(server.url + "health", timeout=10).status_code == 200
        took, left = server.stop(signum)
        assert server.proc.returncode == 0, server.text()[-2000:]
        assert took <= STOP_LIMIT_S
        assert not left, [command_line(pid) for pid in left]
    finally:
        server.kill()


@pytest.mark.parametrize("after_s", [1.0, 6.0])
def test_a_signal_while_it_starts_stops_it_and_every_ray_process(trained_ast, after_s):
    """At 1 s the model is being checked; at 6 s Ray is starting or the replica loading the model."""
    server = ServeProcess(trained_ast.path, "--dtype", "float32").launch()
    try:
        time.sleep(after_s)
        took, left = server.stop(signal.SIGTERM)
        assert took <= STARTING_STOP_LIMIT_S, server.text()[-2000:]
        assert not left, [command_line(pid) for pid in left]
    finally:
        server.kill()


def test_without_serve_token_it_warns_that_requests_need_no_token(trained_ast):
    server = ServeProcess(trained_ast.path, "--dtype", "float32", "--host", "0.0.0.0")
    try:
        server.start()
        assert requests.post(server.url, data=body(tone(DOG_HZ, 1, 16000)), timeout=60).status_code == 200
        warning = next(line.text for line in server.snapshot() if "SERVE_TOKEN is not set" in line.text)
        assert "listens on 0.0.0.0: anyone who reaches it may use it" in warning
    finally:
        server.kill()


@pytest.fixture(scope="module")
def joined_cluster():
    """A cluster started apart from any server (``ray start``), with Ray 2.60's token auth on; its
    nodes were started without SERVE_TOKEN. Yields (address, its daemons' pids)."""
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # Ray's socket paths must stay short
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SERVE_TOKEN"}
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "token"})
    ray_cli = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]
    subprocess.run(ray_cli + ["start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                              f"--temp-dir={temp_dir}"], env=env, check=True, capture_output=True, timeout=120)
    daemons = {pid for pid in all_pids() if temp_dir in command_line(pid)}  # gcs_server, raylet, ...
    try:
        yield f"127.0.0.1:{port}", daemons
    finally:  # never `ray stop`: it stops every Ray cluster on the machine
        for pid in daemons | {child for pid in daemons for child in children_of(pid)}:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)


def join(address: str, model, token: str | None = None) -> ServeProcess:
    return ServeProcess(model, "--dtype", "float32", "--address", address, token=token,
                        env={"RAY_AUTH_MODE": "token"})


def run_to_exit(server: ServeProcess, timeout_s: float = 240.0) -> subprocess.CompletedProcess:
    return subprocess.run(server._command, cwd=ROOT, env=server._environ, capture_output=True, text=True,
                          timeout=timeout_s)


def test_a_joined_cluster_keeps_running_when_the_server_stops(trained_ast, joined_cluster):
    address, daemons = joined_cluster
    assert daemons
    server = join(address, trained_ast.path)
    try:
        server.start()
        took, _ = server.stop(signal.SIGTERM)
        assert server.proc.returncode == 0 and took <= STOP_LIMIT_S
    finally:
        server.kill()
    assert all(alive(pid) for pid in daemons)


def test_a_token_the_clusters_replicas_do_not_see_stops_the_start(trained_ast, joined_cluster):
    """SERVE_TOKEN set for the server but not on the cluster's nodes would serve without auth."""
    proc = run_to_exit(join(joined_cluster[0], trained_ast.path, token=SERVE_TOKEN))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert proc.returncode == 2
    assert errors == ["ERROR: SERVE_TOKEN is set here, but the replicas run without it, so anyone could use the "
                      "server: on a joined cluster, set SERVE_TOKEN in the environment of every node's ray start "
                      "(or the pods' env)"]
    assert "ready" not in proc.stdout and SERVE_TOKEN not in proc.stdout + proc.stderr


def test_an_application_already_on_the_cluster_is_neither_replaced_nor_removed(trained_ast, joined_cluster):
    first = join(joined_cluster[0], trained_ast.path)
    try:
        first.start()
        ready = next(line.text for line in first.snapshot() if line.text.startswith("ready"))
        url = re.search(r"ready: (\S+)", ready)[1]  # the cluster's proxy port, which may not be first.port
        proc = run_to_exit(join(joined_cluster[0], trained_ast.path))
        assert proc.returncode == 2
        assert "the cluster already runs an application named audio-labeler" in proc.stderr.splitlines()[-1]
        assert requests.get(url + "health", timeout=10).status_code == 200  # still serving
    finally:
        first.kill()


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


@pytest.mark.parametrize("make, says", [
    (lambda path: path / "missing", "no such folder"),
    (make_tiny_ctc, "not an audio classifier"),
])
def test_a_model_it_cannot_serve_exits_2_with_one_line(tmp_path, make, says):
    folder = make(tmp_path / "model") if make is make_tiny_ctc else make(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "serve", "--model", str(folder), "--port", str(free_port())],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert proc.returncode == 2
    assert len(errors) == 1 and says in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in errors[0]


def test_a_port_in_use_exits_2_naming_it(trained_ast):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "serve", "--model", str(trained_ast.path), "--port", str(port)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].startswith(f"ERROR: --port {port}: cannot listen on 127.0.0.1:{port}")


@pytest.mark.parametrize("args, env, says", [
    (["--device", "cuda"], {}, "ERROR: --device cuda needs --num-gpus 1 (or more)"),
    (["--max-body-mb", "0.02"], {}, "ERROR: --max-body-mb (max_body_mb) 0.02 is below the 0.05 MB"),
    ([], {"SERVE_TOKEN": "token\twith a tab"}, "ERROR: SERVE_TOKEN holds a control character"),
])
def test_what_would_fail_every_request_exits_2_before_ray_starts(trained_ast, args, env, says):
    proc = subprocess.run([sys.executable, "-m", "serve", "--model", str(trained_ast.path), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].startswith(says)


@pytest.mark.parametrize("flag, value, says", [
    ("--port", "70000", "--port 70000 must be from 1 to 65535"),
    ("--batch-size", "-1", "--batch-size -1 must be from 0 to 1024"),
    ("--batch-wait-ms", "nan", "--batch-wait-ms nan must be from 0 to 10000"),
    ("--dtype", "int4", "invalid choice: 'int4'"),
])
def test_a_bad_flag_exits_2_naming_it(flag, value, says):
    proc = subprocess.run([sys.executable, "-m", "serve", "--model", "x", flag, value], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and says in proc.stderr


def test_replicas_that_cannot_fit_this_machine_exit_2_before_ray_starts(trained_ast):
    proc = subprocess.run([sys.executable, "-m", "serve", "--model", str(trained_ast.path), "--replicas", "64",
                           "--num-cpus", "1024"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("ERROR: --replicas 64 with --num-cpus 1024 each need "
                                                           "65536 CPUs, and this machine has ")
    assert "Ray" not in proc.stderr  # nothing of a cluster started: Ray logs its start
