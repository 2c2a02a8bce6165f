"""The local backend: AST in this process with transformers, features computed in batches with
torch on the model's device, device and precision chosen from the hardware, CPU threads from the
container's quota.

May import: ``core``, ``audio``, ``models``. torch and transformers are imported only inside functions, so
importing this module stays cheap (``--backend remote`` and ``--help`` never load them).
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from collections.abc import Sequence

import numpy as np

from ..audio import MODEL_FRAME_SAMPLES, MODEL_HOP_SAMPLES, MODEL_RATE_HZ
from ..core import ConfigError, InferenceError, log
from ..models import model_input, score_function

# AST input: Kaldi-style log-mel fbank, 25 ms frames every 10 ms, padded or cut to 1024 frames.
FBANK_FRAME_LEN = MODEL_FRAME_SAMPLES
FBANK_HOP = MODEL_HOP_SAMPLES
FBANK_FFT = 512
FBANK_PREEMPHASIS = 0.97
FBANK_MEL_FLOOR = 1.192092955078125e-07
DTYPES = ("auto", "float32", "bfloat16", "float16")
# torch's CPU allocator says "can't allocate memory" (errno 12 "Cannot allocate memory"); CUDA raises OutOfMemoryError.
_CPU_OOM_RE = re.compile(r"(can't|cannot|could not) allocate memory|out of memory", re.IGNORECASE)


class TorchFbank:
    """ASTFeatureExtractor's features for a whole batch at once, with torch on the model's device.

    The reference extractor loops over frames in numpy (about 10 ms per window on a CPU); this
    computes the same values (same window, mel filters, pre-emphasis, padding and normalisation)
    as a few batched tensor ops, so features never bottleneck a GPU.
    """

    def __init__(self, extractor, device):
        import torch

        self.max_frames = int(extractor.max_length)
        self.mean, self.std = float(extractor.mean), float(extractor.std)
        self.do_normalize = bool(getattr(extractor, "do_normalize", True))
        mel = getattr(extractor, "mel_filters", None)
        window = getattr(extractor, "window", None)
        if mel is None or window is None:  # torchaudio installed: the extractor keeps no tables
            from transformers.audio_utils import mel_filter_bank, window_function

            mel = mel_filter_bank(num_frequency_bins=FBANK_FFT // 2 + 1, num_mel_filters=extractor.num_mel_bins,
                                  min_frequency=20, max_frequency=extractor.sampling_rate // 2,
                                  sampling_rate=extractor.sampling_rate, norm=None, mel_scale="kaldi",
                                  triangularize_in_mel_space=True)
            window = window_function(FBANK_FRAME_LEN, "hann", periodic=False)
        self.mel = torch.as_tensor(mel, dtype=torch.float32, device=device)
        self.window = torch.as_tensor(window, dtype=torch.float32, device=device)
        self.device = device

    def max_samples(self) -> int:
        return FBANK_FRAME_LEN + (self.max_frames - 1) * FBANK_HOP

    def __call__(self, windows: Sequence[np.ndarray]):
        """(B, max_frames, mel bins) float32 features for 16 kHz mono windows of any lengths."""
        import torch

        limit = self.max_samples()
        lengths = [min(len(w), limit) for w in windows]
        width = max(max(lengths), FBANK_FRAME_LEN)
        audio = np.zeros((len(windows), width), dtype=np.float32)
        for row, (w, n) in enumerate(zip(windows, lengths)):
            audio[row, :n] = w[:n]
        frames = torch.from_numpy(audio).to(self.device).unfold(1, FBANK_FRAME_LEN, FBANK_HOP)
        frames = frames - frames.mean(dim=2, keepdim=True)
        frames = torch.cat([frames[..., :1] * (1 - FBANK_PREEMPHASIS),
                            frames[..., 1:] - FBANK_PREEMPHASIS * frames[..., :-1]], dim=2) * self.window
        power = torch.fft.rfft(frames, n=FBANK_FFT).abs().square()
        fbank = torch.clamp(power @ self.mel, min=FBANK_MEL_FLOOR).log()
        n_frames = torch.tensor([max(0, 1 + (n - FBANK_FRAME_LEN) // FBANK_HOP) for n in lengths], device=self.device)
        valid = torch.arange(fbank.shape[1], device=self.device)[None, :] < n_frames[:, None]
        fbank = fbank * valid[..., None]  # frames past a window's end are zero, as the extractor pads
        fbank = torch.nn.functional.pad(fbank, (0, 0, 0, max(0, self.max_frames - fbank.shape[1])))
        fbank = fbank[:, : self.max_frames]
        return (fbank - self.mean) / (2 * self.std) if self.do_normalize else fbank


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
    """True on CPUs with AVX512-BF16 or AMX, where bf16 matmuls run faster than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = fh.read()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, str]:
    """Pick the device and precision: CUDA when present; bf16 where the hardware runs it natively."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch; use --device cpu or install the CUDA build")
    if dtype == "auto":
        if device == "cuda":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dtype = "bfloat16" if cpu_has_native_bf16() else "float32"
    if dtype == "float16" and device == "cpu":
        raise ConfigError("--dtype float16 is for GPUs; on a CPU use float32 or bfloat16")
    return device, dtype


class LocalClassifier:
    """AST in-process with transformers: batched, inference mode, sigmoid or softmax over every class.

    Out of memory, a batch is halved and retried (down to one window), and the smaller batch is
    kept for the rest of the run.
    """

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", batch_size: int = 0,
                 threads: int = 0, score: str = "auto"):
        import torch

        torch.set_num_threads(threads or available_cpus())
        self.device, self.dtype_name = resolve_device_dtype(device, dtype)
        self.name = f"the local model {model} on {self.device}"
        self._torch_dtype = getattr(torch, self.dtype_name)
        started = time.monotonic()
        self._extractor, self._model = _load_model(model, self._torch_dtype, self.device)
        id2label = self._model.config.id2label
        self.score_function = score_function(score, self._model.config.to_dict(), model)
        self.model_input = model_input(self._extractor.to_dict(), model)
        self.class_names = [id2label[i] for i in range(len(id2label))]
        self.batch_size = batch_size or (64 if self.device == "cuda" else 8)
        self.preferred_batch, self.parallel_groups = self.batch_size, 1  # torch already uses every core
        self._fbank = TorchFbank(self._extractor, self.device)
        try:  # the first call allocates: keep it out of labeling, and find a model that loads but cannot run
            self.classify([np.zeros(MODEL_RATE_HZ, dtype=np.float32)])
        except Exception as exc:  # noqa: BLE001 - whatever a broken model raises, the run cannot work
            raise ConfigError(f"--model {model}: loaded, but fails on a test window: {_first_line(exc)}") from None
        self.load_s = time.monotonic() - started

    def classify(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Scores in batches; rows of batches done before a window runs out of memory alone survive it."""
        out = np.zeros((len(windows), len(self.class_names)), dtype=np.float32)
        start, shrunk_from = 0, 0
        while start < len(windows):
            batch = windows[start : start + self.batch_size]
            try:
                out[start : start + len(batch)] = self._scores(batch)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled; the rest re-raises
                if not _is_out_of_memory(exc):
                    raise
                problem = _first_line(exc)
            else:
                start += len(batch)
                continue
            self._free_memory()  # outside the except: the exception's frames no longer hold tensors
            if len(batch) == 1:
                raise InferenceError(f"{self.name} ran out of memory on a single window ({problem})",
                                     failed=range(start, len(windows)), scores=out if start else None)
            shrunk_from, self.batch_size = shrunk_from or len(batch), len(batch) // 2
        if shrunk_from:
            log(f"WARNING: {self.name} ran out of memory with batch {shrunk_from}; continuing with batch "
                f"{self.batch_size}")
        return out

    def cancel(self) -> None:
        pass  # one batch runs at a time and takes seconds at most: let it finish

    def close(self) -> None:
        pass

    def _scores(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            features = self._fbank(batch).to(self._torch_dtype)
            logits = self._model(input_values=features).logits
            logits = logits.float()
            scores = logits.sigmoid() if self.score_function == "sigmoid" else logits.softmax(dim=-1)
            return scores.cpu().numpy()

    def _free_memory(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()


def _is_out_of_memory(exc: Exception) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError)
                                                       and _CPU_OOM_RE.search(str(exc)) is not None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _load_model(model: str, dtype, device: str):
    """Load the feature extractor and model; every failure becomes a one-line ConfigError."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # carriage-return bars garble Studio's job log
    looks_local = model.startswith((".", "/", "~")) or os.path.isdir(model)
    if looks_local and not os.path.isdir(os.path.expanduser(model)):
        raise ConfigError(f"--model {model}: no such folder; give a model folder or a Hugging Face model id")
    from .hub import locate  # a hub id: from the cache when the hub is unreachable, or one line saying why not

    path = os.path.expanduser(model) if looks_local else locate(model)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a broken checkpoint prints a table of mismatched weights; our line says it
    try:
        extractor, network = _from_pretrained(path, dtype)
    except Exception as exc:  # noqa: BLE001 - a corrupt file raises anything (SafetensorError, RuntimeError...)
        offline = " (HF_HUB_OFFLINE is set: the model must already be in the hub cache)" if \
            os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0") and not looks_local else ""
        raise ConfigError(f"--model {model}: cannot load it as an audio classifier{offline}: "
                          f"{_load_problem(exc)}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if not getattr(network.config, "id2label", None) or not hasattr(extractor, "max_length"):
        raise ConfigError(f"--model {model}: not an AST-style audio classifier (no labels or no fbank extractor)")
    return extractor, network.to(device).eval()


def _from_pretrained(path: str, dtype):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    with warnings.catch_warnings():  # the reference mel table has empty filters by design
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
        extractor = AutoFeatureExtractor.from_pretrained(path)
    return extractor, AutoModelForAudioClassification.from_pretrained(path, dtype=dtype)


def _load_problem(exc: Exception) -> str:
    """One line on why loading failed, in the user's terms where transformers' own words point elsewhere."""
    if "ignore_mismatched_sizes" in str(exc):  # its text points at a report we silenced
        return "its weights do not fit the shapes in its config.json (a config.json edited or from another model?)"
    if type(exc).__name__ == "SafetensorError":
        return f"its weights file is damaged or incomplete ({_first_line(exc)}); download it again"
    return _first_line(exc)
