"""``python -m serve --model MODEL --port PORT``: the model on Ray Serve, in the foreground.

Starts a local Ray cluster (or joins one with ``--address``), deploys the application of
``serve.app``, prints a line with ``ready`` once ``GET /health`` answers, and on Ctrl-C or SIGTERM
removes the application and stops every Ray process it started (a joined cluster keeps running).
Point the block at it with ``--backend remote --inference-url http://HOST:PORT/``.

May import: ``serve.options``, ``serve.protocol``, ``serve.app`` (with Ray, inside ``run``), ``labeler``
(core, classifiers.local's model check), ray.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from labeler.core import ConfigError

from .options import ServerOptions, check_body_limit, read_token

ROOT = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
DEFAULT_PORT = 8000
READY_TIMEOUT_S = 60.0  # from deployed to /health answering through the proxy
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _in_range(name: str, low: float, high: float, whole: bool = False):
    """An argparse type: a number from ``low`` to ``high`` (whole when ``whole``); its message names the flag."""
    def parse(text: str) -> float:
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {text!r} is not a {'whole number' if whole else 'number'}") \
                from None
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{name} {value:g} must be from {low:g} to {high:g}")
        return value
    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    from labeler.classifiers.local import DEVICES, DTYPES
    from labeler.models import SCORE_FUNCTIONS

    from .options import DEFAULT_BATCH_WAIT_MS, MAX_BATCH_WAIT_MS
    from .protocol import DEFAULT_MAX_BODY_BYTES

    p = argparse.ArgumentParser(prog="python -m serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="Hugging Face model id or model folder (any audio classifier)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=_in_range("--port", 1, 65535, whole=True), default=DEFAULT_PORT)
    p.add_argument("--dtype", choices=DTYPES, default="auto", help="as the block's --dtype")
    p.add_argument("--device", choices=DEVICES, default="auto", help="as the block's --device")
    p.add_argument("--batch-size", type=_in_range("--batch-size", 0, 1024, whole=True), default=0,
                   help="most windows per forward pass, gathered across requests (0: 8 on a CPU, 64 with a GPU)")
    p.add_argument("--batch-wait-ms", type=_in_range("--batch-wait-ms", 0, MAX_BATCH_WAIT_MS),
                   default=DEFAULT_BATCH_WAIT_MS,
                   help="how long a batch waits for more windows after its first, while others are on their way")
    p.add_argument("--threads", type=_in_range("--threads", 0, 1024, whole=True), default=0,
                   help="inference threads per replica (0: its --num-cpus)")
    p.add_argument("--score-function", choices=SCORE_FUNCTIONS, default="auto",
                   help="for requests without function_to_apply (auto: as the model was trained)")
    p.add_argument("--replicas", type=_in_range("--replicas", 1, 64, whole=True), default=1)
    p.add_argument("--num-cpus", type=_in_range("--num-cpus", 0.1, 1024), default=0,
                   help="CPUs per replica (default: this machine's CPUs shared by the replicas)")
    p.add_argument("--num-gpus", type=_in_range("--num-gpus", 0, 64), default=0, help="GPUs per replica")
    p.add_argument("--max-body-mb", type=_in_range("--max-body-mb", 0.01, 1024),
                   default=DEFAULT_MAX_BODY_BYTES / 2**20, help="larger request bodies get HTTP 413")
    p.add_argument("--address", default="", help="join this Ray cluster (e.g. auto) instead of starting one")
    return p.parse_args(argv)


def server_options(args: argparse.Namespace) -> ServerOptions:
    from labeler.classifiers.local import CPU_BATCH, GPU_BATCH

    if args.device == "cuda" and not args.num_gpus:
        raise ConfigError("--device cuda needs --num-gpus 1 (or more): Ray shows a replica only the GPUs it was given")
    batch = args.batch_size or (GPU_BATCH if args.num_gpus else CPU_BATCH)
    return ServerOptions(args.model, args.dtype, args.device, batch, args.batch_wait_ms, args.threads,
                         args.score_function, int(args.max_body_mb * 2**20))


def warn_if_exposed(host: str, token: str | None) -> None:
    if not token:
        exposed = "" if host in LOOPBACK_HOSTS else f", and it listens on {host}: anyone who reaches it may use it"
        print(f"WARNING: SERVE_TOKEN is not set, so requests need no token{exposed}; set SERVE_TOKEN to require "
              "Authorization: Bearer <token>", file=sys.stderr, flush=True)


def check_model(options: ServerOptions) -> None:
    """Before Ray starts, from the model's config and extractor (not its weights): a missing folder, a
    hub id with no hub and no cached copy, a model the block refuses, or a body limit below one of its
    windows fails in seconds, in one line (a replica's own failure reaches this process only as Ray's
    wrapped text)."""
    from labeler.classifiers.local import check_model_files

    heard = check_model_files(options.model)
    check_body_limit(options.max_body_bytes, heard.heard_samples, options.model)


def wait_until_healthy(url: str, stop: threading.Event) -> dict | None:
    """The replicas' /health answer once it comes through Ray's proxy; None on a signal or timeout."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our own URL
                if resp.status == 200:
                    return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            pass
        stop.wait(0.2)
    return None


def deploy_problem(exc: BaseException) -> str:
    """One line from a failed deployment: the replica's own ConfigError when there is one."""
    text = str(exc)
    found = re.findall(r"ConfigError: (.+)", text)
    return found[-1].strip() if found else (text.strip().splitlines() or [type(exc).__name__])[-1][:300]


def replica_cpus(args: argparse.Namespace, machine_cpus: int) -> float:
    """CPUs per replica: as asked, else this machine's shared by the replicas. On a cluster this process
    starts, replicas that need more CPUs than the machine has would never be placed (the start would
    hang), so that is refused; a joined cluster may have more nodes, and Ray places them there."""
    each = args.num_cpus or max(1.0, float(machine_cpus // args.replicas))
    if not args.address and each * args.replicas > machine_cpus:
        raise ConfigError(f"--replicas {args.replicas} with --num-cpus {each:g} each need {each * args.replicas:g} "
                          f"CPUs, and this machine has {machine_cpus}; lower them, or join a larger cluster "
                          "with --address")
    return each


def join_problem(address: str, exc: ConnectionError) -> str:
    cause = exc.__cause__
    hint = ("; the cluster uses token authentication: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to its token"
            if cause is not None and "Authentication" in type(cause).__name__ else
            "; check the address (ray status prints it on the head node)")
    return f"--address {address}: cannot join the Ray cluster ({str(exc).splitlines()[0][:200]}){hint}"


def run(args: argparse.Namespace, options: ServerOptions, stop: threading.Event, token: str | None) -> int:
    import ray
    from ray import serve

    from .app import APP_NAME, build_app

    machine_cpus = _machine_cpus()
    cpus_each = replica_cpus(args, machine_cpus)
    if not args.address:
        check_port_free(args.host, args.port)
    if stop.is_set():  # a signal while the model was checked: nothing started yet
        return EXIT_OK
    with signals_held():  # Ray's own SIGTERM handler, set in ray.init, would exit at once and strand its daemons
        try:
            ray.init(address=args.address or None, num_cpus=None if args.address else machine_cpus,
                     include_dashboard=False, logging_level="WARNING", log_to_driver=True)
        except ConnectionError as exc:  # only when joining: a local start has nothing to connect to
            raise ConfigError(join_problem(args.address, exc)) from None
        install_stop_handlers(stop)  # ours again, before a signal held meanwhile is let through
    deployed = False
    try:
        if stop.is_set():  # a signal came while Ray started
            return EXIT_OK
        if args.address and APP_NAME in serve.status().applications:
            raise ConfigError(f"--address {args.address}: the cluster already runs an application named {APP_NAME} "
                              "(serve deploy?); use it, or remove it with serve shutdown before starting this one")
        serve.start(http_options={"host": args.host, "port": args.port}, logging_config={"encoding": "TEXT"})
        deployed = True
        app = build_app(options, replicas=args.replicas, num_cpus=cpus_each, num_gpus=args.num_gpus,
                        constructor_retries=args.replicas)
        problem = deploy_until_running_or_stopped(serve, app, APP_NAME, stop)
        if stop.is_set():
            return EXIT_OK
        if problem:
            print(f"ERROR: the server could not start: {problem}", file=sys.stderr, flush=True)
            return EXIT_CONFIG
        url = f"http://{url_host(args.host)}:{proxy_port(args.port)}/"
        health = wait_until_healthy(url + "health", stop)
        if health is None:
            return EXIT_OK if stop.is_set() else _not_healthy(url)
        if token and not health.get("auth"):
            raise ConfigError("SERVE_TOKEN is set here, but the replicas run without it, so anyone could use the "
                              "server: on a joined cluster, set SERVE_TOKEN in the environment of every node's "
                              "ray start (or the pods' env)")
        print(f"ready: {url} serves {args.model} ({args.replicas} replica(s), {cpus_each:g} CPUs each, batch "
              f"{options.batch_size}, auth {'on' if health.get('auth') else 'off'}); point the block at it with "
              f"--backend remote --inference-url {url}", flush=True)
        stop.wait()
        print("stopping", flush=True)
        return EXIT_OK
    finally:
        if deployed:
            _leave(serve, APP_NAME, joined=bool(args.address))
        ray.shutdown()  # the processes of a cluster this process started go with it


def deploy_until_running_or_stopped(serve, app, app_name: str, stop: threading.Event) -> str:
    """Deploy in a thread (a replica may load the model for minutes) while a signal can still stop
    the start; "" once the application runs or a signal came, else the one-line problem."""
    outcome: list[str] = []

    def deploy() -> None:
        try:
            serve.run(app, name=app_name, route_prefix="/", blocking=False)
            outcome.append("")
        except Exception as exc:  # noqa: BLE001 - Ray wraps the replica's error in its own types
            outcome.append(deploy_problem(exc))

    threading.Thread(target=deploy, name="deploy", daemon=True).start()
    while not outcome and not stop.wait(0.2):
        pass
    return outcome[0] if outcome else ""


def proxy_port(asked: int) -> int:
    """The port Serve's proxy listens on: on a joined cluster where Serve already ran, its own (Ray keeps
    the first http_options and says so), else ``asked``."""
    try:
        from ray.serve.context import _get_global_client  # no public API tells the running proxy's port

        port = _get_global_client().http_config.port
    except Exception:  # noqa: BLE001 - an older or newer Ray: the port asked for
        return asked
    if port != asked:
        print(f"WARNING: Serve already runs on this cluster and listens on port {port}; --port {asked} does not "
              "apply", file=sys.stderr, flush=True)
    return port


def check_port_free(host: str, port: int) -> None:
    """Ray's proxy would fail to bind on its own and the start would only time out: say it now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); choose another "
                              "port, or stop what uses it") from None


def url_host(host: str) -> str:
    """The host for the URL the block is told: loopback for every-interface, IPv6 in brackets."""
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"[{host}]" if ":" in host else host


def _leave(serve, app_name: str, joined: bool) -> None:
    """Remove what this process deployed: the application from a joined cluster, all of Serve from its own."""
    try:
        if joined:
            serve.delete(app_name)
        else:
            serve.shutdown()
    except Exception as exc:  # noqa: BLE001 - stopping goes on; ray.shutdown still ends our own cluster
        print(f"WARNING: could not remove the application cleanly ({type(exc).__name__})", file=sys.stderr)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait (the kernel keeps them pending) until the block ends, then arrive."""
    stopping = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stopping)


def install_stop_handlers(stop: threading.Event) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())


def _not_healthy(url: str) -> int:
    print(f"ERROR: the application deployed but {url}health did not answer within {READY_TIMEOUT_S:g} s",
          file=sys.stderr, flush=True)
    return EXIT_FAILED


def _machine_cpus() -> int:
    from labeler.classifiers.local import available_cpus

    return available_cpus()


def main(argv: list[str] | None = None) -> int:
    # Read by Ray when it is imported (in ``run``). Ray folds lines of one pattern from several processes
    # into one "[repeated Nx]": every replica's batch lines are wanted, each in its place.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Replicas import serve.app and labeler: the workers Ray starts here inherit this path.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    stop = threading.Event()
    install_stop_handlers(stop)
    try:
        options, token = server_options(args), read_token(os.environ)
        warn_if_exposed(args.host, token)
        check_model(options)
        return run(args, options, stop, token)
    except ConfigError as exc:
        print(f"ERROR: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
