"""Shared fixtures: emulated Studio and inference servers, generated samples, and a runner."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Read by huggingface_hub at import time: no test may reach the hub.
os.environ["HF_HUB_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import labeler.core  # noqa: E402
import transform  # noqa: E402
from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, noise, silence, tone  # noqa: E402
from inference_emulator import LABELS, InferenceEmulator  # noqa: E402
from studio_emulator import EmuSample, StudioEmulator  # noqa: E402
from tiny_models import TINY_MODELS, TrainedModel, make_trained_ast  # noqa: E402
from tiny_models import make_tiny_ast  # noqa: E402,F401 - also used by benchmarks

STUDIO_KEY = "ei_0123456789abcdef-secret-studio-key"
HF_TOKEN = "hf_secretTokenValue987654321"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch):
    """No test sees the developer's keys or endpoints."""
    for name in list(os.environ):
        if name.startswith(("EI_", "HF_")) and name != "HF_HUB_OFFLINE":
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def own_precision_cache(tmp_path_factory, monkeypatch):
    """On a CPU listing bf16, ``--dtype auto`` measures and caches its verdict: never in the developer's cache."""
    monkeypatch.setenv("AST_LABELER_CACHE_DIR", str(tmp_path_factory.mktemp("block-cache")))


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """Retry waits shrink so fault tests take seconds; the retry logic itself is unchanged."""
    monkeypatch.setattr(labeler.core, "HTTP_BACKOFF_BASE_S", 0.02)


@pytest.fixture
def studio():
    with StudioEmulator(STUDIO_KEY) as emulator:
        yield emulator


@pytest.fixture
def hf():
    with InferenceEmulator(HF_TOKEN) as emulator:
        yield emulator


def speech_then_music(rate_hz: int) -> EmuSample:
    """4 s: speech tone 0-2 s, music tone 2-4 s."""
    return EmuSample(101, "speech_music.wav", rate_hz,
                     [concat(tone(SPEECH_HZ, 2, rate_hz), tone(MUSIC_HZ, 2, rate_hz))],
                     metadata={"site": "lab"})


def standard_samples(rate_hz: int = 16000) -> list[EmuSample]:
    return [
        speech_then_music(rate_hz),
        EmuSample(102, "dog_silence_dog.wav", rate_hz,
                  [concat(tone(DOG_HZ, 1, rate_hz), silence(2, rate_hz), tone(DOG_HZ, 1, rate_hz))]),
        EmuSample(103, "short_noise.wav", rate_hz, [noise(0.5, rate_hz)]),
    ]


@pytest.fixture
def project(studio):
    for sample in standard_samples():
        studio.state.add(sample)
    return studio


# Dog 0.73, Bark 0.5, everything else 0.018: every window's best label of interest is fixed.
DOG_LOGITS = [1.0 if name == "Dog" else 0.0 if name == "Bark" else -4.0 for name in LABELS]


@pytest.fixture(scope="session")
def dog_model(tmp_path_factory) -> Path:
    return make_tiny_ast(tmp_path_factory.mktemp("dog-model"), DOG_LOGITS)


@pytest.fixture(scope="session")
def random_model(tmp_path_factory) -> Path:
    return make_tiny_ast(tmp_path_factory.mktemp("random-model"), seed=1)


@pytest.fixture(scope="session")
def trained_ast(tmp_path_factory) -> TrainedModel:
    """(path, eval windows, their labels): a tiny AST trained once per session (a few seconds on one
    core) to score like the inference emulator, so its scores depend on the audio."""
    return make_trained_ast(tmp_path_factory.mktemp("trained-ast"))


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory):
    """``tiny_model_folder(name)``: the folder of ``tiny_models.TINY_MODELS[name]``, built once per session."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = TINY_MODELS[name](tmp_path_factory.mktemp(name))
        return built[name]

    return get


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def run_block(tmp_path, capsys, studio, hf):
    """Run transform.main in-process against the emulators; returns exit code and output."""

    def run(*args: str, ids=None, env: dict | None = None, labels: str = "Speech\\nMusic\\nDog",
            backend: str = "remote") -> Run:
        ids_file = tmp_path / "ids.json"
        ids_file.write_text(json.dumps(sorted(studio.state.samples) if ids is None else ids))
        environ = {"EI_PROJECT_API_KEY": STUDIO_KEY, "EI_API_ENDPOINT": studio.endpoint,
                   "HF_TOKEN": HF_TOKEN, "HF_ENDPOINT": hf.hub}
        environ.update(env or {})
        environ = {k: v for k, v in environ.items() if v is not None}
        argv = ["--data-ids-file", str(ids_file), "--audioset-labels", labels, "--backend", backend]
        if backend == "remote":
            argv += ["--inference-url", hf.url]
        code = transform.main(argv + list(args), environ)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run
