"""Review outputs that never change what is written: the run report (window scores, segments,
per-label totals, Audacity label files) and one plot per sample.

May import: ``core``, ``audio``, ``timeline``, ``records``. matplotlib and librosa are imported
when a plot is drawn.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Sequence

import numpy as np

from .audio import MODEL_RATE_HZ
from .core import LoadedSample, SampleInfo, Settings, plural, write_file_atomically
from .records import segment_json
from .timeline import Labeling, Window, class_index


def _safe_name(info: SampleInfo) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(info.name)[0]).strip("_") or "sample"
    return f"{info.sample_id}_{stem}"[:120]


def _json_safe(value):
    """``value`` with every NaN or infinity (a backend's bad score) replaced by None, i.e. null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _dumps(value, **kwargs) -> str:
    """Strict JSON (no bare NaN, which JSON parsers reject) of what the report writes."""
    return json.dumps(_json_safe(value), allow_nan=False, **kwargs)


class Report:
    """--report-dir: per-window top scores, segments, per-label totals, and Audacity label files."""

    TOP_K = 5

    def __init__(self, folder: str, settings: Settings, class_names: Sequence[str]):
        self.folder, self.settings, self.class_names = folder, settings, list(class_names)
        index = class_index(self.class_names)
        self._interest = [(s.output_label, index[s.model_label.lower()]) for s in settings.specs]
        os.makedirs(os.path.join(folder, "audacity"), exist_ok=True)
        self._windows = open(os.path.join(folder, "windows.jsonl"), "w", encoding="utf-8")
        self._segments = open(os.path.join(folder, "segments.jsonl"), "w", encoding="utf-8")
        self._totals: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def sample_labeled(self, sample: LoadedSample, windows: Sequence[Window], scores: np.ndarray,
                       labeling: Labeling) -> None:
        info = sample.info
        hz = info.frequency_hz
        lines = []
        for window, row in zip(windows, scores):
            top = np.argsort(np.where(np.isfinite(row), row, -np.inf))[::-1][: self.TOP_K]  # NaN, inf rank last
            lines.append(_dumps({
                "sample_id": info.sample_id, "name": info.name, "start_ix": window.start_ix,
                "end_ix": window.stop_ix - 1, "start_s": round(window.start_ix / hz, 4),
                "end_s": round(window.stop_ix / hz, 4),
                "top": [[self.class_names[i], round(float(row[i]), 4)] for i in top],
                "labels_of_interest": {label: round(float(row[column]), 4) for label, column in self._interest}}))
        segments = [{**segment_json(seg), "start_s": round(seg.start_ix / hz, 4),
                     "end_s": round((seg.end_ix + 1) / hz, 4)} for seg in labeling.segments]
        audacity = "".join(f"{seg['start_s']:.4f}\t{seg['end_s']:.4f}\t{seg['label']}\n" for seg in segments)
        with self._lock:
            self._windows.write("\n".join(lines) + "\n")
            single = {} if labeling.single_label is None else {"label": labeling.single_label}
            self._segments.write(_dumps({"sample_id": info.sample_id, "name": info.name, **single,
                                         "segments": segments, **labeling.confidence}) + "\n")
            for seg in segments:
                total = self._totals.setdefault(seg["label"], {"segments": 0, "seconds": 0.0, "samples": set()})
                total["segments"] += 1
                total["seconds"] += seg["end_s"] - seg["start_s"]
                total["samples"].add(info.sample_id)
        with open(os.path.join(self.folder, "audacity", f"{_safe_name(info)}.txt"), "w", encoding="utf-8") as fh:
            fh.write(audacity)

    def finish(self) -> None:
        self._windows.close()
        self._segments.close()
        totals = {label: {"segments": t["segments"], "seconds": round(t["seconds"], 3), "samples": len(t["samples"])}
                  for label, t in sorted(self._totals.items())}
        write_file_atomically(os.path.join(self.folder, "label_totals.json"), _dumps(totals, indent=2))


class Plotter:
    """--plot-dir: one PNG per sample: log-mel spectrogram with the segments as colored bands, and the
    score curves of the labels of interest against their thresholds."""

    def __init__(self, folder: str, settings: Settings):
        self.folder, self.settings = folder, settings
        os.makedirs(folder, exist_ok=True)
        names = [s.output_label for s in settings.specs] + [settings.other_label]
        palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]
        self.colors = {name: palette[i % len(palette)] for i, name in enumerate(dict.fromkeys(names))}
        self.colors[settings.other_label] = "#b0b0b0"

    def sample_labeled(self, sample: LoadedSample, windows: Sequence[Window], scores: np.ndarray,
                       labeling: Labeling) -> None:
        figure = self.figure(sample, labeling)
        figure.savefig(os.path.join(self.folder, f"{_safe_name(sample.info)}.png"), dpi=100)

    def figure(self, sample: LoadedSample, labeling: Labeling):
        """The figure for one sample (object-oriented matplotlib: safe off the main thread)."""
        import librosa
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch

        info, audio = sample.info, sample.audio_16k
        duration_s = info.values_count / info.frequency_hz
        hop = max(160, len(audio) // 2000)  # at most ~2000 columns, whatever the length
        mel = librosa.power_to_db(librosa.feature.melspectrogram(y=audio, sr=MODEL_RATE_HZ, n_mels=64,
                                                                 hop_length=hop, n_fft=max(400, hop)), ref=np.max)
        fig = Figure(figsize=(12, 5.5), layout="constrained")
        spec_ax, score_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
        spec_ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=(0, duration_s, 0, 64))
        spec_ax.set_ylabel("mel band")
        verdict = f"label {labeling.single_label}" if labeling.single_label is not None else \
            plural(len(labeling.segments), "segment")
        spec_ax.set_title(f"{info.name} (sample {info.sample_id}): {verdict}")
        for seg in labeling.segments:
            start, end = seg.start_ix / info.frequency_hz, (seg.end_ix + 1) / info.frequency_hz
            spec_ax.axvspan(start, end, ymin=0.92, ymax=1.0, color=self.colors[seg.label], label="_band")
            score_ax.axvspan(start, end, color=self.colors[seg.label], alpha=0.12)
        step_s = labeling.step / info.frequency_hz
        times = np.append(np.arange(len(labeling.winners)) * step_s, duration_s)
        for k, spec in enumerate(self.settings.specs):
            color = self.colors[spec.output_label]
            curve = np.append(labeling.step_scores[:, k], labeling.step_scores[-1, k])
            score_ax.step(times, curve, where="post", color=color, lw=1.8, label=spec.output_label)
            score_ax.axhline(self.settings.threshold(spec), color=color, ls="--", lw=1)
        score_ax.set_ylim(0, 1)
        score_ax.set_xlim(0, duration_s)
        score_ax.set_xlabel("time (s)")
        score_ax.set_ylabel("score (dashed: threshold)")
        handles = [Patch(color=c, label=n) for n, c in self.colors.items()]
        fig.legend(handles=handles, loc="outside right upper", fontsize=9)
        return fig

    def finish(self) -> None:
        pass
