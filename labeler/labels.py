"""Labels of interest: parse the ``--audioset-labels`` lines (renames, per-label thresholds) and
check them against the model's own class names, suggesting close matches for typos.

May import: ``core``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from .core import ConfigError, LabelSpec

_RENAME_RE = re.compile(r"^(?P<model>.*?)\s*\((?P<inner>[^()]*)\)\s*$")


def split_label_lines(text: str) -> list[str]:
    """Studio sends multiline text with literal backslash-n; accept both kinds of newline."""
    lines = text.replace("\\n", "\n").splitlines()
    return [line.strip() for line in lines if line.strip()]


def parse_label_line(line: str, known_lower: dict[str, str] | None) -> LabelSpec:
    """Parse one labels line; ``known_lower`` maps lowercased model labels to their real names.

    A line that is itself a model label wins over the rename syntax, because some AudioSet
    names contain parentheses ("Roaring cats (lions, tigers)").
    """
    if known_lower is not None and line.lower() in known_lower:
        return LabelSpec(known_lower[line.lower()], line)
    match = _RENAME_RE.match(line)
    if not match or not match.group("model"):
        return LabelSpec(_canonical(line, known_lower), line)
    model_text, inner = match.group("model").strip(), match.group("inner").strip()
    name, threshold = inner, None
    head, sep, tail = inner.rpartition(",")
    if sep and _looks_like_number(tail):
        name, threshold = head.strip(), _parse_threshold(tail.strip(), line)
    return LabelSpec(_canonical(model_text, known_lower), name or model_text, threshold)


def _looks_like_number(text: str) -> bool:
    return re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", text) is not None


def _parse_threshold(text: str, line: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(
            f"--audioset-labels: threshold {text} in line {line!r} is out of range; use a value from 0 to 1"
        )
    return value


def _canonical(model_text: str, known_lower: dict[str, str] | None) -> str:
    if known_lower is None:
        return model_text
    return known_lower.get(model_text.lower(), model_text)


def parse_label_specs(text: str, known_labels: Sequence[str] | None) -> tuple[LabelSpec, ...]:
    """Parse and validate ``--audioset-labels``; unknown labels raise with close matches."""
    known_lower = None if known_labels is None else {k.lower(): k for k in known_labels}
    specs = tuple(parse_label_line(line, known_lower) for line in split_label_lines(text))
    if not specs:
        raise ConfigError("--audioset-labels is empty; give at least one AudioSet label, one per line")
    if known_lower is not None:
        unknown = [s.model_label for s in specs if s.model_label.lower() not in known_lower]
        if unknown:
            raise ConfigError("; ".join(_unknown_label_message(u, known_labels or []) for u in unknown))
    seen: set[str] = set()
    for spec in specs:
        if spec.model_label.lower() in seen:
            raise ConfigError(f"--audioset-labels: {spec.model_label!r} is listed twice; list each model label once")
        seen.add(spec.model_label.lower())
    return specs


def _unknown_label_message(label: str, known: Sequence[str]) -> str:
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(label.lower(), list(by_lower), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(repr(by_lower[c]) for c in close)}?" if close else ""
    return f"unknown AudioSet label {label!r} in --audioset-labels.{hint}"
