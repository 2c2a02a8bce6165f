"""A client for the Ray Serve server started as a process (serve run, the server image): a free port,
waiting for /health, and one window posted as the block posts it. No Ray import, so the container
tests can use it where Ray is not installed.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from audio import DOG_HZ, tone
from labeler.audio import MODEL_RATE_HZ, encode_audio_16k

POLL_S = 0.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, still_running: Callable[[], bool], timeout_s: float) -> bool:
    """True once GET {url}health answers 200; False after timeout_s or once the server has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and still_running():
        try:
            with urllib.request.urlopen(url + "health", timeout=5) as resp:  # noqa: S310 - loopback
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(POLL_S)
    return False


def post_window(url: str, token: str | None = None) -> tuple[int, object]:
    """(status, parsed JSON answer) for one 1 s window, as the remote backend sends it: base64 FLAC in JSON."""
    audio = tone(DOG_HZ, 1, MODEL_RATE_HZ)
    body = json.dumps({"inputs": base64.b64encode(encode_audio_16k(audio)).decode()}).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, body, headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
