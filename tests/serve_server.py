"""``python -m serve`` as a user starts it, in a child process on 127.0.0.1: its output collected line
by line with arrival times, the Ray processes it started found by walking /proc, its batch log
lines parsed, and a stop by signal timed. psutil is not a dependency, so /proc is read directly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from serve_client import free_port

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 180.0  # Ray's start plus the model's load, on a loaded 2-vCPU machine
BATCH_RE = re.compile(r"batch of (\d+) windows \(([^)]*)\) in (\d+) ms")
REPLICA_PROCESS = "ServeReplica:audio-labeler:AudioClassifier"


@dataclass(frozen=True)
class Line:
    at: float  # time.monotonic() when the line was read
    text: str


@dataclass(frozen=True)
class Batch:
    at: float
    size: int
    functions: str  # e.g. "2 sigmoid, 1 none"
    ms: int


def children_of(pid: int) -> set[int]:
    """Every living descendant of ``pid`` (Ray's daemons, raylet's workers and actors)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class ServeProcess:
    """One server: ``start()`` waits for its ``ready`` line; ``stop()`` signals it and times the exit."""

    def __init__(self, model: Path | str, *args: str, token: str | None = None, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.token = token
        environ = {k: v for k, v in os.environ.items() if k not in ("SERVE_TOKEN", "RAY_ADDRESS")}
        environ.update({"HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"})
        if token:
            environ["SERVE_TOKEN"] = token  # from the environment, never on the command line
        environ.update(env or {})
        self._command = [sys.executable, "-m", "serve", "--model", str(model), "--port", str(self.port), *args]
        self._environ = environ
        self.lines: list[Line] = []
        self._lock = threading.Lock()
        self.proc: subprocess.Popen | None = None

    def launch(self) -> ServeProcess:
        """Start the process without waiting for it to be ready."""
        self.proc = subprocess.Popen(self._command, cwd=ROOT, env=self._environ, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace")
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def start(self) -> ServeProcess:
        self.launch()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if any("ready" in line.text and line.text.startswith("ready") for line in self.snapshot()):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        output = "\n".join(line.text for line in self.snapshot()[-40:])
        self.kill()
        raise RuntimeError(f"python -m serve did not become ready:\n{output}")

    def _read(self) -> None:
        for text in self.proc.stdout:
            with self._lock:
                self.lines.append(Line(time.monotonic(), text.rstrip("\n")))

    def snapshot(self) -> list[Line]:
        with self._lock:
            return list(self.lines)

    def text(self) -> str:
        return "\n".join(line.text for line in self.snapshot())

    def batches(self, since: float = 0.0) -> list[Batch]:
        found = []
        for line in self.snapshot():
            match = BATCH_RE.search(line.text)
            if match and line.at >= since:
                found.append(Batch(line.at, int(match[1]), match[2], int(match[3])))
        return found

    def session_dir(self) -> Path:
        """The folder of this server's Ray session (its logs), from the raylet's command line."""
        for pid in children_of(self.proc.pid):
            found = re.search(r"--session[-_]dir=(\S+)", command_line(pid))
            if found:
                return Path(found[1])
        raise RuntimeError("no raylet among the server's processes")

    def replica_pids(self) -> list[int]:
        return sorted(pid for pid in children_of(self.proc.pid) if REPLICA_PROCESS in command_line(pid))

    def headers(self, token: str | None = "own") -> dict:
        token = self.token if token == "own" else token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 30.0) -> tuple[float, set[int]]:
        """Signal the server; (seconds until it exited, the processes it had started that still live)."""
        started_by_it = children_of(self.proc.pid)
        sent = time.monotonic()
        self.proc.send_signal(signum)
        try:
            self.proc.wait(timeout_s)
        finally:
            took = time.monotonic() - sent
            deadline = time.monotonic() + 5.0  # the kernel reaps orphans a moment after their parent goes
            while any(alive(pid) for pid in started_by_it) and time.monotonic() < deadline:
                time.sleep(0.1)
        return took, {pid for pid in started_by_it if alive(pid)}

    def kill(self) -> None:
        """Teardown: the server and everything it started, whatever state it is in."""
        if self.proc is None or self.proc.poll() is not None:
            return
        started_by_it = children_of(self.proc.pid)
        try:
            self.stop(signal.SIGTERM, timeout_s=15.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for pid in started_by_it:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
