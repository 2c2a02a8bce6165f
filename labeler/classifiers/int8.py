"""``--dtype int8``: the local model exported to ONNX once, its linear layers (MatMul weights) quantized
to int8 by ONNX Runtime's dynamic quantization, stored under a key of its weights and the library
versions, and run by an ONNX Runtime session on the same batched features torch would get.

Also a command: ``python -m labeler.classifiers.int8 MODEL`` converts once (the Dockerfile runs it
when it bakes the model in), so a job never pays the conversion.

May import: ``core`` (and ``local``, ``precision`` beside it: the command, the block's cache folder). torch, transformers, onnx and
onnxruntime are imported only inside functions.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..core import ConfigError, log
from .precision import CACHE_ENV, cache_root  # noqa: F401 - CACHE_ENV names the folder for callers

# Bump when the export or quantization changes: converted models of an older format are not reused.
INT8_FORMAT = 1
ONNX_OPSET = 17
HASH_CHUNK_BYTES = 1 << 20
KEY_HEX_CHARS = 20
# What the key covers: the weights and the config that shapes the graph (features are computed outside).
KEYED_FILES = re.compile(r"^(config\.json|.*\.safetensors|.*\.bin)$")
# ONNX Runtime's allocator failures ("Failed to allocate memory", std::bad_alloc), unlike torch's texts.
ORT_OOM_RE = re.compile(r"failed to allocate memory|bad_alloc|out of memory", re.IGNORECASE)


class ExportFailed(Exception):
    """The model cannot be exported to ONNX or quantized (its architecture, or a missing package)."""


def library_versions() -> str:
    import onnx
    import onnxruntime
    import torch
    import transformers

    return (f"format {INT8_FORMAT}, torch {torch.__version__}, transformers {transformers.__version__}, "
            f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}")


def weights_key(folder: Path) -> str:
    """Hash of the model's config and weight files plus the library versions: two fine-tunes of one
    config, or one model under another exporter, never share a converted model."""
    digest = hashlib.sha256(library_versions().encode())
    for path in sorted(p for p in folder.iterdir() if p.is_file() and KEYED_FILES.match(p.name)):
        digest.update(path.name.encode())
        with open(path, "rb") as fh:
            while chunk := fh.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()[:KEY_HEX_CHARS]


def cache_dir() -> Path:
    """Where converted models go when the model's folder is read-only: the block's cache folder
    (``$AST_LABELER_CACHE_DIR``, shared with the precision verdicts), ``int8/``."""
    return Path(cache_root()) / "int8"


def candidates(folder: Path, key: str) -> list[Path]:
    """Where a converted model may be: beside the model first, then the cache folder."""
    name = f"model-{key}.int8.onnx"
    return [folder / "int8" / name, cache_dir() / name]


def model_folder(source: str) -> Path:
    """The folder the model loaded from: ``source`` itself, or a hub id's snapshot in the hub cache."""
    if os.path.isdir(source):
        return Path(source)
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(source, "config.json")
    if not isinstance(config, str):
        raise ExportFailed(f"cannot find {source} in the hub cache to key its converted model")
    return Path(config).parent


def converted_model(folder: Path, network, sample_inputs: Mapping) -> tuple[Path, float]:
    """The int8 model of ``network`` (loaded from ``folder``): found, or converted and stored (beside
    the model where it is writable, else in the cache folder). Returns its path and the seconds spent
    converting (0 when found)."""
    key = weights_key(folder)
    places = candidates(folder, key)
    for path in places:
        if path.is_file():
            return path, 0.0
    started = time.monotonic()
    for path in places:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _convert(network, sample_inputs, path)
        except OSError:  # a read-only model folder: the cache folder is next
            continue
        return path, time.monotonic() - started
    raise ExportFailed(f"no writable place for the converted model (tried {', '.join(str(p.parent) for p in places)};"
                       f" set {CACHE_ENV} to a writable folder)")


def _convert(network, sample_inputs: Mapping, dest: Path) -> None:
    """Export to ONNX, quantize, and move into place atomically (a stopped conversion leaves no model)."""
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".int8-") as work:
        plain, quantized = Path(work) / "model.onnx", Path(work) / "model.int8.onnx"
        _export(network, sample_inputs, plain)
        _quantize(plain, quantized)
        os.replace(quantized, dest)


def _export(network, sample_inputs: Mapping, path: Path) -> None:
    import warnings

    import torch

    names = list(sample_inputs)
    # Batch is free; 2-D inputs (waveforms, attention masks) are free in length too. AST's and Whisper's
    # features are fixed in size, as their extractors pad every window.
    axes = {n: ({0: "batch", 1: "length"} if sample_inputs[n].dim() == 2 else {0: "batch"}) for n in names}
    axes["logits"] = {0: "batch"}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow are expected
            torch.onnx.export(network, (), str(path), kwargs=dict(sample_inputs), input_names=names,
                              output_names=["logits"], dynamic_axes=axes, opset_version=ONNX_OPSET, dynamo=False)
    except Exception as exc:  # noqa: BLE001 - the exporter raises anything on an unsupported graph
        raise ExportFailed(f"ONNX export failed: {_first_line(exc)}") from None


def _quantize(plain: Path, quantized: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it advises a pre-processing step on the root logger, every time
    try:
        # Per-tensor QInt8 weights, activations quantized per batch at run time (QUInt8): the VNNI path.
        quantize_dynamic(str(plain), str(quantized), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    except Exception as exc:  # noqa: BLE001
        raise ExportFailed(f"int8 quantization failed: {_first_line(exc)}") from None
    finally:
        root.setLevel(level)


class Int8Session:
    """An ONNX Runtime CPU session over the converted model: takes the features torch would get."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its warnings are not the user's to act on
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._names = {i.name for i in self._session.get_inputs()}

    def logits(self, inputs: Mapping) -> np.ndarray:
        """One window per run: dynamic quantization scales activations over the whole input tensor,
        so in a batch a window's scores would depend on its neighbours (by ~1e-3). Alone, and cut at
        its attention mask, it scores the same in any batch; AST's 1214 tokens fill the cores anyway."""
        arrays = {n: v.cpu().numpy() for n, v in inputs.items() if n in self._names}
        rows = []
        for i in range(len(next(iter(arrays.values())))):
            feed = {n: v[i : i + 1] for n, v in arrays.items()}
            if "attention_mask" in feed:
                length = int(feed["attention_mask"].sum())
                feed = {n: v[:, :length] if v.ndim == 2 else v for n, v in feed.items()}
            rows.append(self._session.run(["logits"], feed)[0])
        return np.concatenate(rows)


def is_out_of_memory(exc: BaseException) -> bool:
    return ORT_OOM_RE.search(str(exc)) is not None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def main(argv: list[str]) -> int:
    """Convert MODEL (a hub id or folder) to int8 once, and check it labels a test window."""
    from .local import LocalClassifier

    if len(argv) != 1 or argv[0].startswith("-"):
        log("usage: python -m labeler.classifiers.int8 MODEL  (a Hugging Face model id or a model folder)")
        return 2
    try:
        classifier = LocalClassifier(argv[0], "cpu", "int8")
    except ConfigError as exc:
        log(f"ERROR: {exc}")
        return 2
    path = classifier.int8_path
    log(f"int8 model of {argv[0]}: {path} ({path.stat().st_size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
