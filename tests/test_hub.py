"""A hub model id with no hub: the run stops at once with one line, or loads the model from the hub cache.

huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is imported, and this suite
imports it offline, so the runs with a hub address run transform.py in a fresh process. The hub
there is a closed port, a name that cannot resolve, a server that never answers, or a small
emulated hub on 127.0.0.1 that serves a tiny model or refuses it the way huggingface.co does.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import soundfile

from audio import SPEECH_HZ, tone
from conftest import HF_TOKEN, ROOT
from loopback import LoopbackServer
from tiny_models import make_tiny_ast

MODEL = "org/tiny-ast"
REVISION = "0123456789abcdef0123456789abcdef01234567"
FIXES = ("--model /path/to/model", "HF_HOME", "BAKE_MODEL=1")
# Library retry lines and progress bars, as they looked before this check: none may reach the log.
NOISE = ("Retrying in", "thrown while requesting", "it/s]", "%|", "Could not reach the Hub")
RUN_LIMIT_S = 120  # without the check, an unreachable hub costs about 50 s of retries per file


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_ast(tmp_path_factory.mktemp("tiny-ast"))


@pytest.fixture
def recordings(tmp_path) -> Path:
    folder = tmp_path / "recordings"
    folder.mkdir()
    soundfile.write(folder / "speech.wav", tone(SPEECH_HZ, 1, 16000), 16000)
    return folder


def put_in_hub_cache(hf_home: Path, model_folder: Path, files=None) -> Path:
    """The hub cache layout: models--org--name/snapshots/<revision>/<files>, refs/main naming the revision."""
    repo = hf_home / "hub" / f"models--{MODEL.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    for path in model_folder.iterdir():
        if files is None or path.name in files:
            (snapshot / path.name).write_bytes(path.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


@pytest.fixture
def hf_home(tmp_path) -> Path:
    (tmp_path / "hf-home").mkdir()
    return tmp_path / "hf-home"


class Outcome:
    def __init__(self, proc: subprocess.CompletedProcess, elapsed_s: float):
        self.code, self.elapsed_s = proc.returncode, elapsed_s
        self.lines = (proc.stdout + proc.stderr).splitlines()
        self.text = "\n".join(self.lines)


def label_folder(recordings: Path, hf_home: Path, endpoint: str, model: str = MODEL, **env: str) -> Outcome:
    """transform.py in a fresh process, online (no HF_HUB_OFFLINE) with ``endpoint`` as the hub."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("EI_", "HF_", "TRANSFORMERS_"))}
    environ.update({"HF_HOME": str(hf_home), "HF_ENDPOINT": endpoint, **env})
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "transform.py"), "--input-dir", str(recordings),
                           "--audioset-labels", "Speech", "--backend", "local", "--model", model,
                           "--device", "cpu", "--dtype", "float32"],
                          env=environ, capture_output=True, text=True, timeout=RUN_LIMIT_S)
    return Outcome(proc, time.monotonic() - started)


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed again when this returns


@pytest.fixture
def silent_hub():
    """Accepts connections and never answers (a proxy or firewall that swallows them)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class HubEmulator(LoopbackServer):
    """Serves ``files`` as ``MODEL`` at revision main, or answers every request with ``refuse``
    (status, X-Error-Code) as huggingface.co refuses an unknown, private or gated model."""

    def __init__(self, files: dict[str, bytes], refuse: tuple[int, str] | None = None):
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                self.answer(body=False)

            def do_GET(self) -> None:
                self.answer(body=True)

            def answer(self, body: bool) -> None:
                hub.requests.append(f"{self.command} {self.path}")
                name = self.path.rsplit("/", 1)[-1]
                if refuse is None and self.path.startswith(f"/{MODEL}/resolve/main/") and name in files:
                    data = files[name]
                    self.send_response(200)
                    self.send_header("X-Repo-Commit", REVISION)
                    self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if body:
                        self.wfile.write(data)
                    return
                status, code = refuse or (404, "EntryNotFound")
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__(Handler)


def serving(model_folder: Path, refuse=None) -> HubEmulator:
    return HubEmulator({p.name: p.read_bytes() for p in model_folder.iterdir()}, refuse)


# --- no hub, nothing cached: one line, at once ------------------------------------------------------------


@pytest.mark.parametrize("hub", ["closed port", "unresolvable name", "silent server"])
def test_unreachable_hub_and_empty_cache_stop_the_run_at_once_with_one_line(recordings, hf_home, silent_hub, hub):
    endpoint = {"closed port": closed_port(), "unresolvable name": "http://hub.invalid",
                "silent server": silent_hub}[hub]
    result = label_folder(recordings, hf_home, endpoint)
    assert result.code == 2
    assert result.elapsed_s < 10, f"{result.elapsed_s:.1f} s"
    assert len(result.lines) == 1, result.text  # no retry lines, no progress bars
    line = result.lines[0]
    assert line.startswith(f"ERROR: --model {MODEL} could not be downloaded: the hub at {endpoint} cannot be reached")
    assert all(fix in line for fix in FIXES), line
    assert not (recordings / "info.labels").exists()


def test_a_partly_cached_model_is_not_loaded_without_the_hub(recordings, hf_home, tiny_model):
    put_in_hub_cache(hf_home, tiny_model, files={"config.json", "preprocessor_config.json"})  # no weights
    result = label_folder(recordings, hf_home, closed_port())
    assert result.code == 2 and result.elapsed_s < 10
    assert len(result.lines) == 1 and "it is only partly in the hub cache" in result.text, result.text


# --- no hub, the model cached: it loads from the cache without waiting -------------------------------------


def test_a_cached_model_loads_at_once_when_the_hub_is_unreachable(recordings, hf_home, tiny_model):
    put_in_hub_cache(hf_home, tiny_model)
    result = label_folder(recordings, hf_home, closed_port())
    assert result.code == 0, result.text
    # Torch, the model and one file take a few seconds; the retries alone took about 50 s.
    assert result.elapsed_s < 20, f"{result.elapsed_s:.1f} s"
    assert not [line for line in result.lines if any(noise in line for noise in NOISE)], result.text
    assert f"loading {MODEL} from the hub cache" in result.lines[0]
    assert json.loads((recordings / "info.labels").read_text())["files"][0]["path"] == "speech.wav"


def test_a_cached_model_loads_after_one_request_when_the_hub_answers_errors(recordings, hf_home, tiny_model):
    put_in_hub_cache(hf_home, tiny_model)
    with serving(tiny_model, refuse=(503, "")) as hub:
        result = label_folder(recordings, hf_home, hub.base_url)
    assert result.code == 0, result.text
    assert hub.requests == [f"HEAD /{MODEL}/resolve/main/config.json"]
    assert f"answered HTTP 503; loading {MODEL} from the hub cache" in result.lines[0]


# --- a hub that answers -------------------------------------------------------------------------------------


def test_a_reachable_hub_downloads_the_model_into_the_cache_without_progress_bars(recordings, hf_home, tiny_model):
    with serving(tiny_model) as hub:
        result = label_folder(recordings, hf_home, hub.base_url)
    assert result.code == 0, result.text
    assert f"GET /{MODEL}/resolve/main/model.safetensors" in hub.requests
    snapshot = hf_home / "hub" / f"models--{MODEL.replace('/', '--')}" / "snapshots" / REVISION
    assert (snapshot / "model.safetensors").is_file()
    assert not [line for line in result.lines if any(noise in line for noise in NOISE)], result.text


@pytest.mark.parametrize("status", [401, 404])
def test_an_unknown_model_id_is_one_line_that_says_to_check_the_id(recordings, hf_home, tiny_model, status):
    with serving(tiny_model, refuse=(status, "RepoNotFound")) as hub:
        result = label_folder(recordings, hf_home, hub.base_url)
    assert result.code == 2 and len(result.lines) == 1, result.text
    assert f"the hub at {hub.base_url} has no public model by that id (HTTP {status}); check the id" \
           in result.lines[0]
    assert "set HF_TOKEN for a private or gated model" in result.lines[0]


def test_an_unknown_model_id_with_a_token_says_to_check_the_id_and_the_tokens_access(recordings, hf_home,
                                                                                   tiny_model):
    with serving(tiny_model, refuse=(404, "RepoNotFound")) as hub:
        result = label_folder(recordings, hf_home, hub.base_url, HF_TOKEN=HF_TOKEN)
    assert result.code == 2 and len(result.lines) == 1, result.text
    assert result.lines[0].endswith("has no model by that id that HF_TOKEN may read (HTTP 404); check the id "
                                    "(organization/name) and the token's access")
    assert HF_TOKEN not in result.text


def test_a_gated_model_says_to_accept_its_terms_and_set_hf_token(recordings, hf_home, tiny_model):
    with serving(tiny_model, refuse=(403, "GatedRepo")) as hub:
        result = label_folder(recordings, hf_home, hub.base_url, HF_TOKEN=HF_TOKEN)
    assert result.code == 2 and len(result.lines) == 1, result.text
    assert result.lines[0] == (f"ERROR: --model {MODEL} is gated on the hub (HTTP 403): accept its terms at "
                               f"{hub.base_url}/{MODEL} and set HF_TOKEN to a token of that account (the HF_TOKEN "
                               f"given has no access yet)")
    assert HF_TOKEN not in result.text


# --- HF_HUB_OFFLINE (this process runs with it) -----------------------------------------------------------------


def test_offline_mode_and_a_model_not_in_the_cache_give_the_same_fixes(monkeypatch, tmp_path):
    from huggingface_hub import constants

    from labeler.classifiers.local import LocalClassifier
    from labeler.core import ConfigError

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError) as error:
        LocalClassifier(MODEL, "cpu", "float32")
    assert str(error.value).startswith(f"--model {MODEL} could not be downloaded: HF_HUB_OFFLINE is set, "
                                       f"and it is not in the hub cache ({tmp_path})")
    assert all(fix in str(error.value) for fix in FIXES)


# --- what counts as cached ------------------------------------------------------------------------------------


@pytest.fixture
def hub_cache(monkeypatch, tmp_path) -> Path:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path


def test_a_whole_checkpoint_in_the_cache_is_found(hub_cache, tiny_model):
    from labeler.classifiers.hub import cached_snapshot

    snapshot = put_in_hub_cache(hub_cache, tiny_model)
    assert cached_snapshot(MODEL) == (str(snapshot), False)


@pytest.mark.parametrize("missing", ["model.safetensors", "preprocessor_config.json"])
def test_a_checkpoint_missing_a_file_is_only_partly_cached(hub_cache, tiny_model, missing):
    from labeler.classifiers.hub import cached_snapshot

    snapshot = put_in_hub_cache(hub_cache, tiny_model)
    (snapshot / missing).unlink()
    assert cached_snapshot(MODEL) == (None, True)


@pytest.mark.parametrize("shards, cached", [(("a.safetensors", "b.safetensors"), True), (("a.safetensors",), False)])
def test_a_sharded_checkpoint_is_cached_only_with_every_shard(hub_cache, tiny_model, shards, cached):
    from labeler.classifiers.hub import cached_snapshot

    snapshot = put_in_hub_cache(hub_cache, tiny_model, files={"config.json", "preprocessor_config.json"})
    weight_map = {"layer.0": "a.safetensors", "layer.1": "b.safetensors"}
    (snapshot / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for shard in shards:
        (snapshot / shard).write_bytes(b"weights")
    assert cached_snapshot(MODEL) == ((str(snapshot), False) if cached else (None, True))


def test_nothing_in_the_cache_is_not_even_partly_cached(hub_cache):
    from labeler.classifiers.hub import cached_snapshot

    assert cached_snapshot(MODEL) == (None, False)
