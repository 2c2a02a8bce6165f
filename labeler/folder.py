"""The folder target: audio files on disk labeled without Studio, with every label written at the
end into one ``info.labels`` file that ``edge-impulse-uploader --info-file`` understands.

May import: ``core``, ``audio``, ``timeline``, ``records``.
"""

from __future__ import annotations

import json
import os
import threading

from .audio import BadAudio, UndecodableAudio, decode_16k
from .core import ConfigError, LoadedSample, SampleError, SampleInfo, Settings, log, write_file_atomically
from .records import STATUS_DONE, block_metadata, segment_json
from .timeline import Labeling

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


class FolderTarget:
    """Audio files in a folder, labeled without Studio; the labels go into an info.labels file.

    ``DIR/info.labels`` lists every file with multi-label segments in its own frame indices, so
    ``edge-impulse-uploader --info-file DIR/info.labels`` uploads the folder already labeled.
    """

    verb = "labeled"
    parallel = 4  # files decoded ahead, and labels stored, at once

    def __init__(self, root: str, settings: Settings, category: str = "split"):
        self.root, self.settings, self.category = root, settings, category
        self.files = sorted(
            os.path.relpath(os.path.join(folder, name), root)
            for folder, _, names in os.walk(root) for name in names if name.lower().endswith(AUDIO_SUFFIXES))
        if not self.files:
            raise ConfigError(f"--input-dir {root}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found")
        self._entries: dict[int, dict] = {}
        self._lock = threading.Lock()

    def keys(self) -> list[int]:
        return list(range(1, len(self.files) + 1))

    def load(self, key: int, admit=lambda info: None) -> LoadedSample:
        """Decode one file block by block; ``admit`` sees its length (from the header) first."""
        path = self.files[key - 1]

        def header(rate_hz: int, frames: int) -> None:
            admit(SampleInfo(key, path, float(rate_hz), frames, 0, {}))

        try:
            audio, rate_hz, frames = decode_16k(os.path.join(self.root, path), header)
        except UndecodableAudio as exc:
            raise SampleError(f"{path}: cannot decode it ({exc})") from None
        except BadAudio as exc:
            raise SampleError(f"{path}: {exc}") from None
        return LoadedSample(SampleInfo(key, path, float(rate_hz), frames, 0, {}), audio)

    def write(self, info: SampleInfo, labeling: Labeling) -> None:  # no note for the log line
        entry = {"path": info.name, "name": os.path.splitext(os.path.basename(info.name))[0],
                 "category": self.category,
                 "label": {"type": "label", "label": labeling.single_label} if labeling.single_label is not None
                 else {"type": "multi-label", "labels": [segment_json(s) for s in labeling.segments]},
                 "metadata": {**block_metadata({}, self.settings, STATUS_DONE),
                              **labeling.confidence},
                 "boundingBoxes": []}
        with self._lock:
            self._entries[info.sample_id] = entry

    def finish(self) -> None:
        """Write info.labels once, atomically, with every file that was labeled."""
        if not self._entries:
            return
        document = {"version": 1, "files": [self._entries[k] for k in sorted(self._entries)]}
        write_file_atomically(os.path.join(self.root, "info.labels"), json.dumps(document, indent=2))
        log(f"Wrote {os.path.join(self.root, 'info.labels')} ({len(self._entries)} files); upload with "
            f"edge-impulse-uploader --info-file {os.path.join(self.root, 'info.labels')}")
