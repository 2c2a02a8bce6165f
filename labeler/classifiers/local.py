"""The local backend: any transformers audio classifier in this process (AST with its fbank
computed in batches by torch, any other through its own feature extractor), device from the
hardware, precision from the hardware or (``--dtype auto`` on a CPU) measured, CPU threads from the
container's quota; models the block cannot run faithfully are refused before any sample is read.

May import: ``core``, ``audio``, ``models`` (and ``features``, ``hub``, ``int8``, ``precision`` beside it).
torch and transformers are imported only inside functions, so importing this module stays cheap
(``--backend remote`` and ``--help`` never load them).
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from collections.abc import Sequence

import numpy as np

from ..audio import MODEL_RATE_HZ
from ..core import ConfigError, InferenceError, log
from ..models import ModelInput, apply_score_function, check_classifier, model_input, score_function
from .features import ExtractorFeatures, TorchFbank, batch_runs
from .precision import BF16_FLAGS, choose_cpu_dtype, cpu_flags, rows_seen

DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")
DEVICES = ("auto", "cpu", "cuda")
CPU_BATCH, GPU_BATCH = 8, 64  # windows per forward pass when --batch-size is 0
REMOTE_CODE_REFUSED = ("it needs its repository's own Python code (trust_remote_code), which the block never runs; "
                       "choose a model that transformers runs without it")
# torch's CPU allocator says "can't allocate memory" (errno 12 "Cannot allocate memory"); CUDA raises OutOfMemoryError.
_CPU_OOM_RE = re.compile(r"(can't|cannot|could not) allocate memory|out of memory", re.IGNORECASE)


def available_cpus() -> int:
    """CPUs this process may use: affinity, capped by a cgroup CPU quota (containers)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def cpu_has_native_bf16() -> bool:
    """True on CPUs that list AVX512-BF16 or AMX: bf16 may run faster than fp32 there (``precision`` measures)."""
    return bool(cpu_flags() & set(BF16_FLAGS))


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, str]:
    """Pick the device and precision: CUDA when present, in bf16 or fp16; on a CPU ``auto`` stays ``auto``,
    decided after loading by measuring (``precision.choose_cpu_dtype``)."""
    import torch

    if dtype == "int8":  # ONNX Runtime's CPU session; checked first, so the message names the real conflict
        if device == "cuda":
            raise ConfigError("--dtype int8 runs on the CPU only; use --device cpu (or auto), or a GPU precision")
        if device == "auto" and torch.cuda.is_available():
            log("--dtype int8 runs on the CPU, though a CUDA GPU is present (--dtype auto would use the GPU)")
        return "cpu", "int8"
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch; use --device cpu or install the CUDA build")
    if dtype == "auto":
        if device == "cuda":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if dtype == "float16" and device == "cpu":
        raise ConfigError("--dtype float16 is for GPUs; on a CPU use float32 or bfloat16")
    return device, dtype


class LocalClassifier:
    """Any transformers audio classifier in-process: batched, inference mode, sigmoid or softmax
    over every class (or the logits, for a server that applies each request's score function).

    Out of memory, a batch is halved and retried (down to one window), and the smaller batch is
    kept for the rest of the run.
    """

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", batch_size: int = 0,
                 threads: int = 0, score: str = "auto"):
        source = model_source(model)  # before torch loads: no hub and no cached copy fails within seconds
        import torch

        threads = threads or available_cpus()
        torch.set_num_threads(threads)
        self.device, self.dtype_name = resolve_device_dtype(device, dtype)
        measuring, self.precision_note = self.dtype_name == "auto", ""  # the note says why auto chose, for the log
        self.dtype_name = "float32" if measuring else self.dtype_name  # measured against the loaded fp32 model
        self.name = f"the local model {model} on {self.device}"
        self._torch_dtype = torch.float32 if self.dtype_name == "int8" else getattr(torch, self.dtype_name)
        started = time.monotonic()
        self._extractor, self._model = _load_model(model, source, self._torch_dtype, self.device)
        id2label = self._model.config.id2label
        self.score_function = score_function(score, self._model.config.to_dict(), model)
        self.model_input = model_input(self._extractor.to_dict(), model)
        self.class_names = [id2label[i] for i in range(len(id2label))]
        self.batch_size = batch_size or (GPU_BATCH if self.device == "cuda" else CPU_BATCH)
        self.preferred_batch, self.parallel_groups = self.batch_size, 1  # torch already uses every core
        self._int8 = self.int8_path = None
        self._build_features()
        if self.dtype_name == "int8":
            self._int8 = self._int8_session(model, source, threads)
        self._try_a_window(model, measuring)
        if measuring:
            self._choose_cpu_precision(model, source)
        self.load_s = time.monotonic() - started

    def _build_features(self) -> None:
        if type(self._extractor).__name__ == "ASTFeatureExtractor":
            self._features = TorchFbank(self._extractor, self.device, self._torch_dtype)
        else:
            self._features = ExtractorFeatures(self._extractor, self.model_input.heard_samples, self.device,
                                               self._torch_dtype)

    def _try_a_window(self, model: str, measuring: bool = False) -> None:
        """The first call allocates: keep it out of labeling, and find a model that loads but cannot run.
        When ``auto`` is to be measured, it also records the rows each linear layer sees (``precision``)."""
        try:
            if not measuring:
                self.classify([np.zeros(MODEL_RATE_HZ, dtype=np.float32)])
                return
            with rows_seen(self._model) as self._rows_seen:
                self.classify([np.zeros(MODEL_RATE_HZ, dtype=np.float32)])
        except Exception as exc:  # noqa: BLE001 - whatever a broken model raises, the run cannot work
            raise ConfigError(f"--model {model}: loaded, but fails on a test window: {_first_line(exc)}") from None

    def _choose_cpu_precision(self, model: str, source: str) -> None:
        """``--dtype auto`` on a CPU: bf16 only where it measures faster than fp32 (``precision``);
        then the model is loaded again in bf16, exactly as ``--dtype bfloat16`` loads it."""
        import torch

        verdict = choose_cpu_dtype(self._model, self.batch_size, self._rows_seen)
        self._rows_seen = {}  # it holds the fp32 layers
        if verdict.warning:
            log(f"WARNING: {verdict.warning}")
        self.precision_note = verdict.why
        if verdict.dtype == self.dtype_name:
            return
        self.dtype_name, self._torch_dtype = verdict.dtype, getattr(torch, verdict.dtype)
        self._model = None  # free the fp32 copy before the bf16 one loads
        self._extractor, self._model = _load_model(model, source, self._torch_dtype, self.device)
        self._build_features()
        self._try_a_window(model)

    def classify(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Scores (``logits`` through the model's score function), each row in its window's place."""
        try:
            return apply_score_function(self.logits(windows), self.score_function)
        except InferenceError as exc:
            if exc.scores is not None:  # the rows that survived an out-of-memory window
                exc.scores = apply_score_function(exc.scores, self.score_function)
            raise

    def logits(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Float32 logits in batches, each row in its window's place (a server applies each request's
        score function to them); rows of batches done before a window runs out of memory alone survive it."""
        out = np.zeros((len(windows), len(self.class_names)), dtype=np.float32)
        scored: list[int] = []
        shrunk_from = 0
        for run in batch_runs(windows, self._features):
            while run:
                batch = run[: self.batch_size]
                try:
                    out[batch] = self._logits([windows[i] for i in batch])
                except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled; the rest re-raises
                    if not _is_out_of_memory(exc):
                        raise
                    problem = _first_line(exc)
                else:
                    scored += batch
                    run = run[len(batch) :]
                    continue
                self._free_memory()  # outside the except: the exception's frames no longer hold tensors
                if len(batch) == 1:
                    failed = sorted(set(range(len(windows))) - set(scored))
                    raise InferenceError(f"{self.name} ran out of memory on a single window ({problem})",
                                         failed=failed, scores=out if scored else None)
                shrunk_from, self.batch_size = shrunk_from or len(batch), len(batch) // 2
        if shrunk_from:
            log(f"WARNING: {self.name} ran out of memory with batch {shrunk_from}; continuing with batch "
                f"{self.batch_size}")
        return out

    def cancel(self) -> None:
        pass  # one batch runs at a time and takes seconds at most: let it finish

    def close(self) -> None:
        pass

    def _logits(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            inputs = self._features.model_inputs(batch)
            if self._int8 is not None:
                return np.asarray(self._int8.logits(inputs), dtype=np.float32)
            return self._model(**inputs).logits.float().cpu().numpy()

    def _int8_session(self, model: str, source: str, threads: int):
        """The converted model's session (converting it first when no stored one fits these weights);
        the torch model is dropped, so only the int8 one stays in memory."""
        from .int8 import ExportFailed, Int8Session, converted_model, model_folder

        sample = self._features.model_inputs([np.zeros(MODEL_RATE_HZ, dtype=np.float32)] * 2)  # batch 2: not fixed to 1
        try:
            self.int8_path, convert_s = converted_model(model_folder(source), self._model, sample)
        except ExportFailed as exc:
            raise ConfigError(f"--model {model}: --dtype int8 cannot convert it ({exc}); use --dtype float32 or "
                              "bfloat16") from None
        except ImportError as exc:
            raise ConfigError(f"--dtype int8 needs {exc.name} (pip install -r requirements.txt)") from None
        log(f"int8 model: converted in {convert_s:.1f} s, stored at {self.int8_path}" if convert_s else
            f"int8 model: {self.int8_path}")
        self._model = None
        return Int8Session(self.int8_path, threads)

    def _free_memory(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()


def _is_out_of_memory(exc: Exception) -> bool:
    import torch

    if type(exc).__module__.startswith("onnxruntime"):  # --dtype int8: its own error texts
        from .int8 import is_out_of_memory

        return is_out_of_memory(exc)
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError)
                                                       and _CPU_OOM_RE.search(str(exc)) is not None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def model_source(model: str) -> str:
    """Where --model loads from: its folder, or for a hub id the id (or its cached folder when the hub
    is unreachable); one line saying why not otherwise (``hub.locate``)."""
    looks_local = model.startswith((".", "/", "~")) or os.path.isdir(model)
    if looks_local and not os.path.isdir(os.path.expanduser(model)):
        raise ConfigError(f"--model {model}: no such folder; give a model folder or a Hugging Face model id")
    from .hub import locate

    return os.path.expanduser(model) if looks_local else locate(model)


def check_model_files(model: str) -> ModelInput:
    """Every refusal ``LocalClassifier`` would make from the model's config and feature extractor,
    without loading its weights (a server checks before it starts replicas); ConfigError as there.
    Returns how much of a window the model hears."""
    from transformers import AutoConfig

    source = model_source(model)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
        extractor = _extractor_from(source)
    except Exception as exc:  # noqa: BLE001 - as _load_model: a corrupt file raises anything
        raise ConfigError(f"--model {model}: cannot load it as an audio classifier: {_load_problem(exc)}") from None
    _refuse_what_cannot_run(model, extractor, config)
    score_function("auto", config.to_dict(), model)
    return model_input(extractor.to_dict(), model)


def _load_model(model: str, path: str, dtype, device: str):
    """Load the feature extractor and model from ``path``; every failure becomes a one-line ConfigError."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # carriage-return bars garble Studio's job log
    from_hub = path == model and not os.path.isdir(path)  # not a folder, nor the cached copy
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a broken checkpoint prints a table of mismatched weights; our line says it
    try:
        extractor, network = _from_pretrained(path, dtype)
    except Exception as exc:  # noqa: BLE001 - a corrupt file raises anything (SafetensorError, RuntimeError...)
        offline = " (HF_HUB_OFFLINE is set: the model must already be in the hub cache)" if \
            os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0") and from_hub else ""
        raise ConfigError(f"--model {model}: cannot load it as an audio classifier{offline}: "
                          f"{_load_problem(exc)}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    _refuse_what_cannot_run(model, extractor, network.config)
    return extractor, network.to(device).eval()


def _from_pretrained(path: str, dtype):
    from transformers import AutoModelForAudioClassification

    return _extractor_from(path), AutoModelForAudioClassification.from_pretrained(path, dtype=dtype,
                                                                                  trust_remote_code=False)


def _extractor_from(path: str):
    from transformers import AutoFeatureExtractor

    with warnings.catch_warnings():  # the reference mel table has empty filters by design
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
        return AutoFeatureExtractor.from_pretrained(path, trust_remote_code=False)  # never run hub code


def _load_problem(exc: Exception) -> str:
    """One line on why loading failed, in the user's terms where transformers' own words point elsewhere."""
    if "ignore_mismatched_sizes" in str(exc):  # its text points at a report we silenced
        return "its weights do not fit the shapes in its config.json (a config.json edited or from another model?)"
    if "trust_remote_code" in str(exc):  # its text asks to allow the repository's code; the block never does
        return REMOTE_CODE_REFUSED
    if type(exc).__name__ == "SafetensorError":
        return f"its weights file is damaged or incomplete ({_first_line(exc)}); download it again"
    return _first_line(exc)


def _refuse_what_cannot_run(model: str, extractor, config) -> None:
    """ConfigError for a loaded model the block would run wrongly: what transformers loaded as an
    audio classifier but is not one (its head would be random), custom code, or not mono audio."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES

    architectures = config.architectures or []
    if architectures and not set(architectures) & set(MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES.values()):
        raise ConfigError(f"--model {model}: its config names {', '.join(architectures)}, which is not an audio "
                          "classifier (AutoModelForAudioClassification); choose an audio classification model")
    if "AutoModelForAudioClassification" in (getattr(config, "auto_map", None) or {}):
        # transformers loaded its own class in place of the repository's: not the model its author trained
        raise ConfigError(f"--model {model}: {REMOTE_CODE_REFUSED}")
    check_classifier(config.to_dict(), model)
    takes_waveform = (getattr(extractor, "model_input_names", None) or ["input_values"])[0] == "input_values"
    channels = getattr(extractor, "feature_size", 1)
    if takes_waveform and type(extractor).__name__ != "ASTFeatureExtractor" and channels != 1:
        raise ConfigError(f"--model {model}: its feature extractor expects {channels}-channel audio (feature_size "
                          f"{channels}); the block feeds models {MODEL_RATE_HZ} Hz mono audio only")
