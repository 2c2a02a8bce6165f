"""Helpers the benchmark scripts share."""

from __future__ import annotations

import json
import time
from pathlib import Path

import transform


def run_block_timed(argv: list[str], environ: dict[str, str]) -> tuple[int, float, float]:
    """Run transform.main in-process; return (exit code, total seconds, seconds spent labeling).

    The labeling part starts after imports, the Studio connection and the model load, which a run
    pays once; it is what throughput figures are computed from.
    """
    timing = {}
    original_run = transform.run

    def timed_run(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original_run(*args, **kwargs)
        finally:
            timing["labeling_s"] = time.perf_counter() - started

    transform.run = timed_run
    started = time.perf_counter()
    try:
        code = transform.main(argv, environ)
    finally:
        transform.run = original_run
    return code, time.perf_counter() - started, timing.get("labeling_s", float("nan"))


def emit(results: dict, out: str | None) -> None:
    """Print the results as JSON, and save them when asked."""
    text = json.dumps(results, indent=2)
    print(text)
    if out:
        Path(out).write_text(text)
