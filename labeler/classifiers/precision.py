"""How ``--dtype auto`` picks a CPU precision: bf16 only where it measures faster than fp32 on this CPU.

A cpuinfo flag does not predict bf16's speed (a 2-vCPU Xeon VM listing ``avx512_bf16`` without AMX
ran AST's bf16 at 0.6x fp32; a Zen 4 VM at 2x). So the flags only filter: without ``avx512_bf16``
or ``amx_bf16``, fp32 and no probe. Otherwise the model's busiest linear layer is timed in both
precisions on the run's batch x sequence x hidden, and bf16 is taken only when it is at least
``BF16_MIN_SPEEDUP`` faster. A screen on one window first stops the probe where bf16 is far slower,
and a time budget bounds it where a CPU is slow. The verdict is cached per CPU flags, threads, torch
version, model config and batch size, so a second run on the same machine does not measure again.

May import: ``core``. torch is imported only inside functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from ..core import write_file_atomically

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # without one of these, bf16 runs in software: fp32, no probe
KEY_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni")  # what decides bf16's speed
BF16_MIN_SPEEDUP = 1.15  # fp32 seconds / bf16 seconds needed for bf16: a small gain is not worth its error
PROBE_REPEATS = 3  # timed repeats per precision, interleaved, after one warm-up each; medians compared
# First a screen on one window's rows (1/batch of the work): bf16 at under half fp32's speed there cannot reach
# BF16_MIN_SPEEDUP, so the probe stops. It bounds the probe where bf16 is slowest (software bf16 runs 10x fp32).
HOPELESS_SPEEDUP = 0.5
SCREEN_PASSES = 2  # per precision; the faster counts, so a first call's one-time set-up does not decide
PROBE_BUDGET_S = 8.0  # warm-ups and repeats together; past it, fewer of the batch's windows are timed
CACHE_ENV = "AST_LABELER_CACHE_DIR"  # overrides the block's cache folder (default under XDG_CACHE_HOME or ~/.cache)
CACHE_APP_FOLDER = "ast-audio-labeler"
VERDICTS_FOLDER = "precision"
CACHE_FORMAT = 1  # bump when the key or the probe changes meaning


class ProbeError(Exception):
    """The probe could not measure (no linear layer, no input seen); the caller falls back to fp32."""


@dataclass(frozen=True)
class Verdict:
    """The precision ``auto`` picked on a CPU, and why, for the log."""

    dtype: str  # "float32" or "bfloat16"
    why: str  # "no bf16 in cpuinfo", "bf16 measured 0.62x fp32 on this CPU", "cached verdict: ..."
    speedup: float | None = None  # fp32 seconds / bf16 seconds, when measured (now or cached)
    probe_s: float = 0.0  # seconds spent measuring in this run
    warning: str = ""  # set when the probe failed and fp32 was taken for that reason

    def describe(self) -> str:
        return f"{self.why}: {self.dtype}"


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The flags in ``KEY_FLAGS`` that /proc/cpuinfo (or the text given) lists."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
                cpuinfo = fh.read()
        except OSError:
            cpuinfo = ""
    return frozenset(flag for flag in KEY_FLAGS if re.search(rf"\b{flag}\b", cpuinfo))


def cache_root(environ: Mapping[str, str] = os.environ) -> str:
    """The block's cache folder: ``$AST_LABELER_CACHE_DIR``, else ``ast-audio-labeler`` in the XDG cache folder."""
    return environ.get(CACHE_ENV) or os.path.join(
        environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), CACHE_APP_FOLDER)


def cache_folder(environ: Mapping[str, str] = os.environ) -> str:
    """Where verdicts are kept: ``precision`` in the block's cache folder."""
    return os.path.join(cache_root(environ), VERDICTS_FOLDER)


@contextmanager
def rows_seen(model):
    """Record the rows each linear layer gets while the model runs one window (its sequence length there:
    1214 for AST's encoder, 1 for a pooled head)."""
    import torch

    seen: dict = {}

    def hook(module, args):
        seen.setdefault(module, args[0].numel() // args[0].shape[-1])
    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def busiest_layer(seen: Mapping) -> tuple:
    """(layer, rows per window) of the linear layer that costs most per window: the slice every model has
    that dominates its time (AST: an encoder layer's 768x3072 MLP, not its head)."""
    if not seen:
        raise ProbeError("no linear layer ran on the test window")
    return max(seen.items(), key=lambda item: item[0].weight.numel() * item[1])


def layer_timer(layer, tokens: int, batch_size: int) -> Callable[[str, int], float]:
    """``measure(dtype, windows)``: seconds for one pass of ``layer`` over a (windows, tokens, in_features)
    tensor in a precision by name, ``windows`` at most ``batch_size``."""
    import torch

    x = torch.randn(batch_size, tokens, layer.in_features)
    weight = layer.weight.detach().float()
    bias = None if layer.bias is None else layer.bias.detach().float()
    copies = {"float32": (x, weight, bias),
              "bfloat16": (x.bfloat16(), weight.bfloat16(), None if bias is None else bias.bfloat16())}

    def measure(dtype: str, windows: int) -> float:
        x, w, b = copies[dtype]
        x = x[:windows]
        with torch.inference_mode():
            started = time.perf_counter()
            torch.nn.functional.linear(x, w, b)
            return time.perf_counter() - started
    return measure


def compare(measure: Callable[[str, int], float], batch_size: int,
            repeats: int = PROBE_REPEATS) -> tuple[float, int]:
    """(fp32 median seconds / bf16 median seconds, windows timed; 0 when the screen decided).

    A screen on one window first; then, on the batch (or as many of its windows as fit
    ``PROBE_BUDGET_S``), one warm-up per precision and ``repeats`` interleaved pairs."""
    screen = {dtype: min(measure(dtype, 1) for _ in range(SCREEN_PASSES)) for dtype in ("float32", "bfloat16")}
    if screen["float32"] / screen["bfloat16"] < HOPELESS_SPEEDUP:
        return screen["float32"] / screen["bfloat16"], 0
    per_window_s = (screen["float32"] + screen["bfloat16"]) * (1 + repeats)
    windows = max(1, min(batch_size, int(PROBE_BUDGET_S / per_window_s)))
    measure("float32", windows)
    measure("bfloat16", windows)
    fp32, bf16 = [], []
    for _ in range(repeats):
        fp32.append(measure("float32", windows))
        bf16.append(measure("bfloat16", windows))
    return statistics.median(fp32) / statistics.median(bf16), windows


def cache_key(flags: frozenset[str], threads: int, torch_version: str, config: Mapping, batch_size: int) -> dict:
    """What the verdict depends on. The CPU model string is not in it: VMs report generic names."""
    config = {k: v for k, v in config.items() if k not in ("_name_or_path", "torch_dtype", "dtype",
                                                            "transformers_version")}
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    return {"format": CACHE_FORMAT, "flags": sorted(flags), "threads": threads, "torch": torch_version,
            "config": config_hash, "batch": batch_size}


def _cache_path(folder: str, key: dict) -> str:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return os.path.join(folder, f"{name}.json")


def read_verdict(folder: str, key: dict) -> Verdict | None:
    """The cached verdict for ``key``; None when there is none or it cannot be read (then measure again)."""
    try:
        with open(_cache_path(folder, key), encoding="utf-8") as fh:
            stored = json.load(fh)
        speedup = float(stored["speedup"])
        if stored["key"] != key or stored["dtype"] != _dtype_for(speedup):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Verdict(stored["dtype"], f"cached verdict, {_measured(speedup)}", speedup)


def write_verdict(folder: str, key: dict, verdict: Verdict) -> bool:
    """Keep the verdict for the next run; False when the folder cannot be written (the next run measures)."""
    try:
        os.makedirs(folder, exist_ok=True)
        write_file_atomically(_cache_path(folder, key),
                              json.dumps({"key": key, "dtype": verdict.dtype, "speedup": verdict.speedup}) + "\n")
    except OSError:
        return False
    return True


def choose_cpu_dtype(model, batch_size: int, seen: Mapping, *, cpuinfo: str | None = None,
                     measure: Callable[[str, int], float] | None = None, folder: str | None = None) -> Verdict:
    """The precision for ``--dtype auto`` on a CPU for the loaded fp32 ``model``; never raises (a probe that
    fails gives fp32 and a warning).

    ``seen`` is what ``rows_seen`` recorded while the model ran one window.
    ``cpuinfo`` and ``measure`` replace /proc/cpuinfo and the timing (tests, the probe's benchmark).
    """
    import torch

    flags = cpu_flags(cpuinfo)
    if not flags & set(BF16_FLAGS):
        return Verdict("float32", "no bf16 in cpuinfo")
    folder = cache_folder() if folder is None else folder
    key = cache_key(flags, torch.get_num_threads(), torch.__version__, model.config.to_dict(), batch_size)
    cached = read_verdict(folder, key)
    if cached is not None:
        return cached
    started = time.perf_counter()
    try:
        if measure is None:
            measure = layer_timer(*busiest_layer(seen), batch_size)
        speedup, windows = compare(measure, batch_size)
    except Exception as exc:  # noqa: BLE001 - whatever the probe hits, fp32 is always a correct answer
        return Verdict("float32", "bf16 probe failed", warning=f"could not measure bf16 against fp32 on this CPU "
                       f"({type(exc).__name__}: {str(exc)[:200]}); using float32")
    probe_s = time.perf_counter() - started
    scope = ("one window's screen, " if not windows else
             f"{windows} of {batch_size} windows, " if windows < batch_size else "")
    how = f"{scope}probe {probe_s:.1f} s"
    verdict = Verdict(_dtype_for(speedup), f"{_measured(speedup)} ({how})", speedup, probe_s)
    write_verdict(folder, key, verdict)
    return verdict


def _dtype_for(speedup: float) -> str:
    return "bfloat16" if speedup >= BF16_MIN_SPEEDUP else "float32"


def _measured(speedup: float) -> str:
    return f"bf16 measured {speedup:.2f}x fp32 on this CPU"
