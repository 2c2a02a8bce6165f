"""What a replica loads and how it batches, checked the same way whether it comes from
``python -m serve``'s flags or a Serve config file's ``args`` (which arrive untyped).

May import: ``serve.protocol``, ``labeler.core``, ``labeler.models``, ``labeler.classifiers.local`` (its
choices and defaults; torch loads only when a model does). Pure: no Ray, so the command line parses,
and ``--help`` answers, before Ray is imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from labeler.classifiers.local import CPU_BATCH, DEVICES, DTYPES
from labeler.core import ConfigError
from labeler.models import SCORE_FUNCTIONS

from .protocol import DEFAULT_MAX_BODY_BYTES, largest_block_body_bytes

DEFAULT_BATCH_WAIT_MS = 10.0  # a batch waits this long for more windows once its first one arrives
MAX_BATCH_WAIT_MS = 10_000.0
MIN_BODY_BYTES = 1024
TOKEN_ENV = "SERVE_TOKEN"
HEALTH_ROOM = 4  # requests beyond two full batches a replica takes, so /health never queues behind them


@dataclass(frozen=True)
class ServerOptions:
    """The same names as the block's local options, plus how batches gather."""

    model: str
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = CPU_BATCH  # the most windows in one forward pass, gathered across requests
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS
    threads: int = 0  # 0: the CPUs Ray gave the replica (num_cpus)
    score_function: str = "auto"  # for requests without function_to_apply
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


def check_options(options: ServerOptions) -> None:
    """ConfigError naming the option, its value and what is allowed."""
    if not isinstance(options.model, str) or not options.model:
        raise ConfigError(f"model {options.model!r} must be a Hugging Face model id or a model folder")
    choices = {"dtype": DTYPES, "device": DEVICES, "score_function": SCORE_FUNCTIONS}
    for name, allowed in choices.items():
        if getattr(options, name) not in allowed:
            raise ConfigError(f"{name} {getattr(options, name)!r} must be one of {', '.join(allowed)}")
    for name, low in (("batch_size", 1), ("threads", 0), ("max_body_bytes", MIN_BODY_BYTES)):
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} {value!r} must be a whole number of {low} or more")
    wait = options.batch_wait_ms
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_BATCH_WAIT_MS:
        raise ConfigError(f"batch_wait_ms {wait!r} must be a number from 0 to {MAX_BATCH_WAIT_MS:g}")


def options_from_args(args: Mapping[str, object], app_name: str) -> ServerOptions:
    """A config file's ``args``: ServerOptions' fields, with ``max_body_mb`` in place of ``max_body_bytes``."""
    values = dict(args)
    if "max_body_mb" in values:
        if "max_body_bytes" in values:
            raise ConfigError("give max_body_mb or max_body_bytes, not both")
        megabytes = values.pop("max_body_mb")
        if isinstance(megabytes, bool) or not isinstance(megabytes, (int, float)) or not math.isfinite(megabytes) \
                or megabytes * 2**20 < MIN_BODY_BYTES:
            raise ConfigError(f"max_body_mb {megabytes!r} must be a number of megabytes, at least "
                              f"{MIN_BODY_BYTES / 2**20:g}")
        values["max_body_bytes"] = int(megabytes * 2**20)
    known = {f.name for f in fields(ServerOptions)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown arg {unknown[0]!r} for {app_name}; known: {', '.join(sorted(known))}, max_body_mb")
    if "model" not in values:
        raise ConfigError(f"args of {app_name} need model: a Hugging Face model id or a model folder")
    options = ServerOptions(**values)
    check_options(options)
    return options


def ongoing_requests_for(batch_size: int) -> int:
    """Requests a replica takes at once: a full batch running, the next one forming, and room for /health
    beside them (the block's default 16 in flight fill 2 x 8). Ray's default of 5 would cap every batch at 5."""
    return 2 * batch_size + HEALTH_ROOM


def check_body_limit(max_body_bytes: int, heard_samples: int, model: str) -> None:
    """A limit below what the block sends for one window of the model would refuse every window with 413."""
    needed = largest_block_body_bytes(heard_samples)
    if max_body_bytes < needed:
        raise ConfigError(f"--max-body-mb (max_body_mb) {max_body_bytes / 2**20:.3g} is below the "
                          f"{needed / 2**20:.2f} MB the block sends for one window of {model}; raise it")


def read_token(environ: Mapping[str, str]) -> str | None:
    """``SERVE_TOKEN`` as clients send it: surrounding whitespace dropped (a Secret made from a file
    ends in a newline); None when unset or blank. A control character inside is refused by name."""
    token = (environ.get(TOKEN_ENV) or "").strip()
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in token):
        raise ConfigError(f"{TOKEN_ENV} holds a control character, which no client can send in a header; "
                          "set it to printable text")
    return token or None
