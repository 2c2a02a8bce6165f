"""Labels of interest: parse the ``--audioset-labels`` lines (renames, per-label thresholds) and
check them against the model's own class names, suggesting close matches for typos.

A line is ``Model label``, ``Model label (new name)`` or ``Model label (new name, threshold)``.
Text in the parentheses is read as a threshold, and must then be a number from 0 to 1, when:

- the text after the last comma is *number-like*: empty, ``nan``/``inf``/``infinity`` (any case,
  optional sign), or only digits, ``.``, ``%``, signs, ``e``/``E`` and spaces with at least one digit.
  Any other text keeps the comma in the name (``Dog (dogs, cats)`` writes ``dogs, cats``);
- with no such comma, the whole text is a number with a decimal point or a percentage
  (``Dog (0.75)``, ``Dog (.5)``, ``Dog (50%)``: a threshold where the name goes);
- with no such comma, the last word (after a space, ``;`` or ``:``) is a number with a decimal point
  from 0 to 1 or a percentage from 0 to 100 (``Dog (dog 0.4)``, ``Dog (dog; 0.4)``: a missing comma).

Integers without a comma stay names (``zero (0)`` renames a digits model's class), and so do
renames ending in a decimal number outside 0..1 (``Dog (version 2.0)``). Such a threshold attempt
that is not written as ``(name, threshold)`` with a plain decimal is refused with the corrected line.

May import: ``core``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from .core import ConfigError, LabelSpec

_RENAME_RE = re.compile(r"^(?P<model>.*?)\s*\((?P<inner>[^()]*)\)\s*$")
_THRESHOLD_RE = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")  # what float() gets
_POINT_NUMBER_RE = re.compile(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)")
_PERCENT_RE = re.compile(r"(?P<number>[-+]?([0-9]+\.?[0-9]*|\.[0-9]+))\s*%")
_NUMBER_LIKE_RE = re.compile(r"[-+]?(nan|inf|infinity)|[-+.%eE\s0-9]*[0-9][-+.%eE\s0-9]*", re.IGNORECASE)
_LAST_WORD_RE = re.compile(r"(?P<name>.*?)\s*[\s;:]\s*(?P<word>[^\s;:]+)")
_FRACTION_DIGITS = 10  # a percentage's fraction is written with at most this many significant digits


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
    name, threshold = _split_threshold(model_text, inner, line)
    return LabelSpec(_canonical(model_text, known_lower), name or model_text, threshold)


def _split_threshold(model_text: str, inner: str, line: str) -> tuple[str, float | None]:
    """The new name and threshold inside the parentheses (see the module docstring for the rule)."""
    head, sep, tail = inner.rpartition(",")
    name, tail = head.strip(), tail.strip()
    if sep and (not tail or _NUMBER_LIKE_RE.fullmatch(tail)):
        return name, _parse_threshold(tail, line, model_text, name)
    _refuse_threshold_without_comma(model_text, inner, line)
    return inner, None


def _parse_threshold(text: str, line: str, model_text: str, name: str) -> float:
    percent = _PERCENT_RE.fullmatch(text)
    number = _fraction(percent["number"]) if percent else text
    if percent and _in_range(number):
        raise ConfigError(f"--audioset-labels: threshold {text} in line {line!r} is a percentage; thresholds "
                          f"are from 0 to 1: write {_line(model_text, name, number)!r}")
    if not percent and not _THRESHOLD_RE.fullmatch(text):
        plain = f"{model_text} ({name})" if name else model_text
        raise ConfigError(f"--audioset-labels: threshold {text!r} in line {line!r} is not a number from 0 to 1; "
                          f"write e.g. {_line(model_text, name, '0.5')!r}, or {plain!r} to use --min-confidence")
    if not _in_range(number):
        raise ConfigError(
            f"--audioset-labels: threshold {text} in line {line!r} is out of range; use a value from 0 to 1"
        )
    return float(number)


def _refuse_threshold_without_comma(model_text: str, inner: str, line: str) -> None:
    """A number alone where the name goes, or a name ending in a threshold with no comma before it."""
    threshold = _threshold_text(inner)
    if threshold is not None:
        _parse_threshold(inner, line, model_text, "")  # a percentage or out of range: that message says it all
        raise ConfigError(f"--audioset-labels: line {line!r} gives a threshold where the new name goes; "
                          f"write {_line(model_text, '', threshold)!r}")
    last = _LAST_WORD_RE.fullmatch(inner)
    threshold = _threshold_text(last["word"]) if last else None
    if threshold is not None and _in_range(float(threshold)):
        raise ConfigError(f"--audioset-labels: line {line!r} has no comma between the new name and the threshold; "
                          f"write {_line(model_text, last['name'], threshold)!r}")


def _threshold_text(word: str) -> str | None:
    """``word`` as a threshold is written, if it is a number with a decimal point or a percentage."""
    percent = _PERCENT_RE.fullmatch(word)
    if percent:
        return _fraction(percent["number"])
    return word if _POINT_NUMBER_RE.fullmatch(word) else None


def _fraction(percentage: str) -> str:
    return f"{float(percentage) / 100:.{_FRACTION_DIGITS}g}"


def _in_range(number: str | float) -> bool:
    return 0.0 <= float(number) <= 1.0


def _line(model_text: str, name: str, threshold: str) -> str:
    return f"{model_text} ({name}, {threshold})"


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
    hint = f"; did you mean: {', '.join(repr(by_lower[c]) for c in close)}?" if close else ""
    return f"unknown label {label!r} in --audioset-labels (the model has no such class{hint})"
