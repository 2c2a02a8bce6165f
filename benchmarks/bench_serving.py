"""Serving: the block against servers of the same full-size AST, and Ray Serve's own overhead.

Throughput: windows/s of the labeling (start-up excluded) on the SAME windows of a full-size AST
with random weights (bench_local.make_full_size_model), contenders one after another with servers
stopped between, every model on the same thread count as the local backend; each contender runs
``--repeats`` times in alternating rounds and the best try is reported (all are kept in the JSON):

  local         the block, ``--backend local --dtype float32``
  hf_toolkit    the block, ``--backend remote``, against Hugging Face's serving toolkit
                (huggingface-inference-toolkit, in its own venv: ``--toolkit-venv``) serving the model
                folder one request at a time (MAX_CONCURRENT_THREADS=1); "not run: <why>" without it
  hf_pipeline   the block, ``--backend remote``, against transformers' pipeline("audio-classification")
                called one request at a time with the request's parameters (tests/inference_emulator.py
                given the model folder): the toolkit's per-request work without its web stack
  serve         the block, ``--backend remote``, against ``python -m serve`` (one replica, batched,
                ``--dtype float32``); its mean batch size from its ``batch of N windows`` lines
                (the first, the block's one-window test request, left out)

The remote runs pass ``--model <the folder>`` so the block reads the model's config.

The toolkit's venv: ``python3.11 -m venv V``; ``V/bin/pip install torch==2.13.0`` first (the exact
pin takes the local CPU wheel), then huggingface-inference-toolkit with a transformers 4.x it
accepts, uvicorn and starlette; ``apt-get install -y ffmpeg`` (it decodes audio with ffmpeg).
It is started as ``uvicorn huggingface_inference_toolkit.webservice_starlette:app`` with
HF_MODEL_DIR=<the folder> and HF_TASK=audio-classification.

Overhead: a stub model that answers at once, behind Ray Serve and behind a plain
ThreadingHTTPServer, the same protocol on both (POST / with the block's JSON body for a 2 s window,
answered with all 527 classes); per-request latency p50/p90 at concurrency 1 and 16, and the p50
Serve adds. The Serve stub is a minimal @serve.deployment defined here that batches with the real
server's ``serve.batching.Batcher`` (max batch 16, max_ongoing_requests 32, like the real server),
so the figure is Ray's cost plus the server's batching, without its model; it runs with
``--batch-wait-ms`` and again with no wait.

The block runs in a child process with its own Studio emulator; each server runs in its own
process group (the pipeline server in this process) and is stopped before the next contender.
Usage: python benchmarks/bench_serving.py [--windows 24] [--repeats 2] [--toolkit-venv /work/hf-toolkit-venv]
       [--overhead-requests 400] [--skip-throughput] [--skip-overhead] [--out results.json]

May import: benchmarks' common and bench_local, the test emulators, transform, labeler (read only).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import numpy as np  # noqa: E402

from bench_local import AUDIOSET_LIKE, WIN_S, machine, make_full_size_model, make_windows  # noqa: E402
from common import emit, run_block_timed  # noqa: E402
from audio import concat  # noqa: E402
from labeler.audio import encode_audio_16k  # noqa: E402
from labeler.classifiers import local  # noqa: E402
from serve.options import DEFAULT_BATCH_WAIT_MS  # noqa: E402 - the server's own default
from serve_client import free_port  # noqa: E402
from studio_emulator import EmuSample, StudioEmulator  # noqa: E402

KEY = "ei_serving_bench"
CONTENDERS = ("local", "hf_toolkit", "hf_pipeline", "serve")
WINDOWS_PER_SAMPLE = 4  # 8 s samples cut into 2 s windows
DEFAULT_WINDOWS = 24  # ~50 s per contender at the full-size AST's ~0.5 windows/s on 2 vCPUs
DEFAULT_REPEATS = 2  # ~10 min for the throughput half on 2 vCPUs
DEFAULT_TOOLKIT_VENV = "/work/hf-toolkit-venv"
SERVER_START_TIMEOUT_S = 300.0  # model load, Ray start: minutes on a busy 2-vCPU machine
SERVER_STOP_GRACE_S = 30.0
READY_POLL_S = 0.5
BATCH_LINE = re.compile(r"batch of (\d+) windows")
READY_LINE = re.compile(r"^ready\b", re.MULTILINE)
# Overhead half: the stub deployment is shaped like the real server's.
STUB_MAX_BATCH = 16
STUB_MAX_ONGOING = 32
CONCURRENCIES = (1, 16)
DEFAULT_OVERHEAD_REQUESTS = 400  # per setting and server, after a warm-up of 2 per client
TARGET_ADDED_P50_MS = 10.0
HTTP_TIMEOUT_S = 60.0


class NotRun(Exception):
    """A contender that could not be measured; the message says why."""


# ---------------------------------------------------------------- the block, in a child process

def label_windows(model_dir: Path, n_windows: int, backend_argv: list[str]) -> dict:
    """Run transform.main over ``n_windows`` 2 s windows served by a Studio emulator; windows/s of the labeling."""
    windows = make_windows(n_windows)
    with StudioEmulator(KEY) as studio, tempfile.TemporaryDirectory() as tmp:
        for i in range(0, n_windows, WINDOWS_PER_SAMPLE):
            studio.state.add(EmuSample(1000 + i, f"s{i}.wav", 16000, [concat(*windows[i:i + WINDOWS_PER_SAMPLE])]))
        ids = Path(tmp) / "ids.json"
        ids.write_text(json.dumps(sorted(studio.state.samples)))
        code, total, labeling = run_block_timed(
            ["--data-ids-file", str(ids), "--audioset-labels", "Class 0\\nClass 1\\nClass 2", "--model",
             str(model_dir), "--win-size-ms", str(WIN_S * 1000), *backend_argv],
            {"EI_PROJECT_API_KEY": KEY, "EI_API_ENDPOINT": studio.endpoint})
    return {"code": code, "windows": n_windows, "seconds_total": total, "startup_s": total - labeling,
            "windows_per_s": n_windows / labeling}


def block_in_child(model_dir: Path, n_windows: int, backend_argv: list[str]) -> dict:
    """The block in a child process, as Studio runs it; NotRun when it fails."""
    out = subprocess.run([sys.executable, __file__, "--child-block", json.dumps(backend_argv), "--model-dir",
                          str(model_dir), "--windows", str(n_windows)], capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if out.returncode == 0 and lines else {"code": out.returncode}
    if result["code"] != 0:
        raise NotRun(f"the block exited {result['code']}: {last_line(out.stderr)}")
    return result


# ---------------------------------------------------------------- server processes

def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


class ServerProcess:
    """A server in its own process group, its stdout and stderr in one log file; ``with`` stops the whole group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path):
        self.name, self.log_path = name, log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, is_ready) -> None:
        """Return once ``is_ready(self)``; NotRun when the server exits or takes too long."""
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not is_ready(self):
            if self.proc.poll() is not None:
                raise NotRun(f"{self.name} exited {self.proc.returncode} before it was ready: {last_line(self.log())}")
            if time.monotonic() > deadline:
                raise NotRun(f"{self.name} was not ready after {SERVER_START_TIMEOUT_S:g} s: {last_line(self.log())}")
            time.sleep(READY_POLL_S)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        """SIGTERM to the server (a graceful stop), then SIGKILL to what is left of its group (Ray workers)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SERVER_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._log.close()


def says_ready(server: ServerProcess) -> bool:
    """The server's own line starting with "ready" (Ray's "Application ... is ready" comes before /health answers)."""
    return READY_LINE.search(server.log()) is not None


def health_ok(url: str):
    def check(_server: ServerProcess) -> bool:
        import requests
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False
    return check


def server_env(threads: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SERVE_TOKEN", "HF_TOKEN", "HF_API_KEY")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])), **extra)
    return env


# ---------------------------------------------------------------- the throughput contenders

def run_local(model_dir: Path, n: int, threads: int, tmp: Path) -> dict:
    return block_in_child(model_dir, n, ["--backend", "local", "--dtype", "float32"])


def run_hf_toolkit(model_dir: Path, n: int, threads: int, tmp: Path, venv: Path) -> dict:
    python = venv / "bin" / "python"
    if not python.exists():
        raise NotRun(f"no venv at {venv} (build it as this script's docstring says)")
    probe = subprocess.run([str(python), "-c", "import huggingface_inference_toolkit, uvicorn"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise NotRun(f"{venv} cannot import the toolkit ({last_line(probe.stderr)}); install "
                     "huggingface-inference-toolkit there (this docstring says how)")
    port = free_port()
    argv = [str(python), "-m", "uvicorn", "huggingface_inference_toolkit.webservice_starlette:app",
            "--host", "127.0.0.1", "--port", str(port)]
    env = server_env(threads, HF_MODEL_DIR=str(model_dir), HF_TASK="audio-classification",
                     MAX_CONCURRENT_THREADS="1", HF_HUB_OFFLINE="1")
    with ServerProcess("the toolkit", argv, env, tmp / f"toolkit-{port}.log") as server:
        server.wait_ready(health_ok(f"http://127.0.0.1:{port}/health"))
        return block_in_child(model_dir, n, ["--backend", "remote", "--inference-url", f"http://127.0.0.1:{port}/"])


def run_hf_pipeline(model_dir: Path, n: int, threads: int, tmp: Path) -> dict:
    import torch
    from inference_emulator import InferenceEmulator

    torch.set_num_threads(threads)
    with InferenceEmulator(None, model_dir=model_dir) as server:
        return block_in_child(model_dir, n, ["--backend", "remote", "--inference-url", server.url])


def run_serve(model_dir: Path, n: int, threads: int, tmp: Path, serve_args: list[str]) -> dict:
    if not (ROOT / "serve" / "__main__.py").exists():
        raise NotRun("this checkout has no serve/ package (python -m serve) yet")
    port = free_port()
    argv = [sys.executable, "-m", "serve", "--model", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
            "--dtype", "float32", "--threads", str(threads), "--replicas", "1", *serve_args]
    with ServerProcess("python -m serve", argv, server_env(threads), tmp / f"serve-{port}.log") as server:
        server.wait_ready(says_ready)
        result = block_in_child(model_dir, n, ["--backend", "remote", "--inference-url", f"http://127.0.0.1:{port}/"])
        time.sleep(1.0)  # log lines of the last batch reach the file
        log = server.log()
    # The first batch is the block's test request (one short window, sent alone before any sample).
    sizes = [int(m) for m in BATCH_LINE.findall(log)][1:]
    result.update(server_argv=" ".join(["python", "-m", "serve", *argv[3:]]), batches=len(sizes),
                  mean_batch_windows=sum(sizes) / len(sizes) if sizes else None,
                  batch_sizes=dict(sorted(Counter(sizes).items())))
    return result


def throughput(model_dir: Path, args, threads: int, tmp: Path) -> dict:
    """Each contender ``args.repeats`` times, in rounds (every other round in reverse order); the best try leads.

    The best of several tries is the figure least disturbed by other jobs on a shared machine; every
    try is kept, with the load average around it.
    """
    measures = {
        "local": lambda: run_local(model_dir, args.windows, threads, tmp),
        "hf_toolkit": lambda: run_hf_toolkit(model_dir, args.windows, threads, tmp, Path(args.toolkit_venv)),
        "hf_pipeline": lambda: run_hf_pipeline(model_dir, args.windows, threads, tmp),
        "serve": lambda: run_serve(model_dir, args.windows, threads, tmp, args.serve_args.split()),
    }
    chosen = [name for name in CONTENDERS if name in args.contenders.split(",")]
    tries: dict[str, list[dict]] = {name: [] for name in chosen}
    not_run: dict[str, str] = {}
    for round_ in range(args.repeats):
        for name in chosen if round_ % 2 == 0 else chosen[::-1]:
            if name in not_run:
                continue
            print(f"[bench_serving] {name}, try {round_ + 1} ...", file=sys.stderr, flush=True)
            load_before = os.getloadavg()[0]
            try:
                tries[name].append({**measures[name](), "load_1min_before": load_before,
                                    "load_1min_after": os.getloadavg()[0]})
            except NotRun as exc:
                not_run[name] = str(exc)
    runs = {name: {"not_run": not_run[name]} if not tries[name] else
            {**max(tries[name], key=lambda t: t["windows_per_s"]), "tries": tries[name]} for name in chosen}
    base = runs.get("local", {}).get("windows_per_s")
    for run in runs.values():
        if base and "windows_per_s" in run:
            run["ratio_to_local"] = run["windows_per_s"] / base
    return runs


# ---------------------------------------------------------------- the overhead half: stub servers

def stub_answer(body: bytes) -> bytes:
    """What a model that answers at once sends back: the request's top_k of 527 classes (all by default)."""
    top_k = (json.loads(body).get("parameters") or {}).get("top_k") or len(AUDIOSET_LIKE)
    return json.dumps([{"label": name, "score": 0.5} for name in AUDIOSET_LIKE[:top_k]]).encode()


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn in front of Ray Serve
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        data = stub_answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve_stub_plain(port: int) -> None:
    """The stub behind ThreadingHTTPServer, until SIGTERM."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _StubHandler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print("ready", flush=True)
    server.serve_forever(poll_interval=0.05)


def serve_stub_ray(port: int, batch_wait_ms: float, threads: int) -> None:
    """The stub behind Ray Serve (one replica, batched by serve.batching.Batcher), until SIGTERM."""
    import ray
    from ray import serve
    from starlette.responses import Response

    from serve.batching import Batcher

    @serve.deployment(max_ongoing_requests=STUB_MAX_ONGOING, ray_actor_options={"num_cpus": 0})
    class Stub:
        def __init__(self):
            self._batcher = Batcher(self.answer, STUB_MAX_BATCH, batch_wait_ms / 1000)

        async def answer(self, bodies: list[bytes]) -> list[bytes]:
            return [stub_answer(body) for body in bodies]

        async def __call__(self, request) -> Response:
            with self._batcher.arriving():  # as serve/app.py: a batch waits only for requests on their way
                body = await request.body()
            return Response(await self._batcher.submit(body), media_type="application/json")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ray.init(num_cpus=threads, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Stub.bind(), name="stub", route_prefix="/")
    print("ready", flush=True)
    stop.wait()
    serve.shutdown()
    ray.shutdown()


def latencies_s(url: str, body: bytes, concurrency: int, total: int) -> tuple[list[float], float]:
    """(each request's seconds, wall seconds) for ``total`` POSTs from ``concurrency`` clients, after a warm-up."""
    import requests

    per_client = max(1, total // concurrency)
    found: list[float] = []
    lock, start = threading.Lock(), threading.Barrier(concurrency + 1)

    def client() -> None:
        with requests.Session() as session:
            session.trust_env = False
            post = lambda: session.post(url, data=body, headers={"Content-Type": "application/json"},  # noqa: E731
                                        timeout=HTTP_TIMEOUT_S)
            for _ in range(2):
                post().raise_for_status()
            start.wait()
            mine = []
            for _ in range(per_client):
                started = time.perf_counter()
                resp = post()
                resp.raise_for_status()
                resp.json()
                mine.append(time.perf_counter() - started)
            with lock:
                found.extend(mine)

    workers = [threading.Thread(target=client) for _ in range(concurrency)]
    for w in workers:
        w.start()
    start.wait()
    began = time.perf_counter()
    for w in workers:
        w.join()
    return found, time.perf_counter() - began


def summary(seconds: list[float], wall_s: float) -> dict:
    ms = np.array(seconds) * 1000
    return {"requests": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "requests_per_s": len(ms) / wall_s}


def overhead(args, threads: int, tmp: Path) -> dict:
    body = json.dumps({"inputs": base64.b64encode(encode_audio_16k(make_windows(3)[2])).decode("ascii"),
                       "parameters": {"top_k": len(AUDIOSET_LIKE), "function_to_apply": "sigmoid"}}).encode()
    # Without the wait too: at concurrency 1 a batch never fills, so every request waits it out.
    servers = {"plain": ["--child-stub-plain"],
               "ray_serve": ["--child-stub-serve", "--batch-wait-ms", str(args.batch_wait_ms)],
               "ray_serve_no_wait": ["--child-stub-serve", "--batch-wait-ms", "0"]}
    out: dict = {"batch_wait_ms": args.batch_wait_ms, "request_body_bytes": len(body),
                 "target_added_p50_ms": TARGET_ADDED_P50_MS}
    for name, flags in servers.items():
        print(f"[bench_serving] stub behind {name} ...", file=sys.stderr, flush=True)
        port = free_port()
        argv = [sys.executable, __file__, *flags, "--port", str(port), "--threads", str(threads)]
        try:
            with ServerProcess(f"the {name} stub", argv, server_env(threads), tmp / f"stub-{name}.log") as server:
                server.wait_ready(says_ready)
                out[name] = {f"concurrency_{c}": summary(*latencies_s(f"http://127.0.0.1:{port}/", body, c,
                                                                      args.overhead_requests))
                             for c in CONCURRENCIES}
        except NotRun as exc:
            out[name] = {"not_run": str(exc)}
    if "not_run" not in out["plain"]:
        out["added_p50_ms"] = {name: {key: out[name][key]["p50_ms"] - plain["p50_ms"] for key, plain in
                                      out["plain"].items()} for name in servers if name != "plain"
                               and "not_run" not in out[name]}
    return out


# ---------------------------------------------------------------- report

def table(results: dict) -> str:
    lines = []
    runs = results.get("throughput") or {}
    if runs:
        lines += [f"Throughput, {results['windows']} windows of {WIN_S} s, full-size AST, {results['threads']} threads",
                  f"{'contender':<12} {'windows/s':>10} {'vs local':>9} {'start-up s':>11}  notes"]
        for name, run in runs.items():
            if "not_run" in run:
                lines.append(f"{name:<12} {'-':>10} {'-':>9} {'-':>11}  not run: {run['not_run']}")
                continue
            notes = (f"mean batch {run['mean_batch_windows']:.2f} windows over {run['batches']} batches"
                     if run.get("mean_batch_windows") else "")
            ratio = f"{run['ratio_to_local']:.2f}" if "ratio_to_local" in run else "-"
            lines.append(f"{name:<12} {run['windows_per_s']:>10.3f} {ratio:>9} {run['startup_s']:>11.1f}  {notes}")
    stub = results.get("overhead")
    if stub:
        lines += ["", f"Stub model, p50 / p90 ms per request (Serve batch wait {stub['batch_wait_ms']:g} ms)",
                  f"{'server':<18} " + " ".join(f"{'c=' + str(c):>18}" for c in CONCURRENCIES)]
        for name in ("plain", "ray_serve", "ray_serve_no_wait"):
            cells = stub[name]
            lines.append(f"{name:<18} " + ("not run: " + cells["not_run"] if "not_run" in cells else " ".join(
                f"{cells[f'concurrency_{c}']['p50_ms']:>8.2f} / {cells[f'concurrency_{c}']['p90_ms']:>7.2f}"
                for c in CONCURRENCIES)))
        for name, added in stub.get("added_p50_ms", {}).items():
            lines.append(f"{'added p50, ' + name:<18} " + " ".join(f"{v:>18.2f}" for v in added.values())
                         + f"   (target <= {TARGET_ADDED_P50_MS:g} ms)")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, default=DEFAULT_WINDOWS, help="windows per throughput contender")
    p.add_argument("--toolkit-venv", default=DEFAULT_TOOLKIT_VENV, help="venv with huggingface-inference-toolkit")
    p.add_argument("--serve-args", default="", help="more arguments for python -m serve (e.g. '--batch-size 4')")
    p.add_argument("--batch-wait-ms", type=float, default=DEFAULT_BATCH_WAIT_MS,
                   help="the Serve stub's batch wait (serve.batching.Batcher)")
    p.add_argument("--overhead-requests", type=int, default=DEFAULT_OVERHEAD_REQUESTS)
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="tries per contender; the best is reported")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help="which throughput contenders, comma-separated")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--logs-dir", default=None, help="keep the servers' output there (default: deleted)")
    # child processes of this script
    p.add_argument("--child-block", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--child-stub-plain", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-stub-serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=local.available_cpus(), help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.child_block:
        print(json.dumps(label_windows(Path(args.model_dir), args.windows, json.loads(args.child_block))))
        return
    if args.child_stub_plain:
        return serve_stub_plain(args.port)
    if args.child_stub_serve:
        return serve_stub_ray(args.port, args.batch_wait_ms, args.threads)
    results = {"machine": machine(), "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
               "windows": args.windows, "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(args.logs_dir or tmp)  # the servers' output
        logs.mkdir(parents=True, exist_ok=True)
        if not args.skip_throughput:
            model_dir = make_full_size_model(Path(tmp) / "ast-full")
            results["throughput"] = throughput(model_dir, args, args.threads, logs)
        if not args.skip_overhead:
            results["overhead"] = overhead(args, args.threads, logs)
    results["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
    emit(results, args.out)
    print(table(results))


if __name__ == "__main__":
    main()
