"""The folder target: audio files on disk labeled without Studio, with every label written at the
end into one ``info.labels`` file that ``edge-impulse-uploader --info-file`` understands.

May import: ``core``, ``audio``, ``timeline``, ``records``.
"""

from __future__ import annotations

import json
import os
import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from .audio import BadAudio, UndecodableAudio, decode_16k
from .core import (ConfigError, LoadedSample, SampleError, SampleInfo, Settings, check_writable_folder, first_few, log,
                   plural, write_file_atomically)
from .records import STATUS_DONE, block_metadata, segment_json
from .timeline import Labeling

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
INFO_FILE = "info.labels"
NAMES_SHOWN = 3  # skipped files named in the log line


@dataclass(frozen=True)
class FolderFiles:
    """What --input-dir holds: the audio files to label and the other files left alone (paths relative to it)."""

    audio: tuple[str, ...]
    skipped: tuple[str, ...]


def find_files(root: str) -> FolderFiles:
    """Sort the folder's files into audio and the rest; the block's own info.labels is neither."""
    found = sorted(os.path.relpath(os.path.join(folder, name), root)
                   for folder, _, names in os.walk(root) for name in names)
    audio = tuple(f for f in found if f.lower().endswith(AUDIO_SUFFIXES))
    skipped = tuple(f for f in found if not f.lower().endswith(AUDIO_SUFFIXES) and f != INFO_FILE)
    return FolderFiles(audio, skipped)


def open_folder(root: str) -> FolderFiles:
    """Check --input-dir before anything is loaded: audio files to label, and info.labels writable there."""
    files = find_files(root)
    if not files.audio:
        raise ConfigError(f"--input-dir {root}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found")
    if files.skipped:
        log(f"--input-dir {root}: skipping {plural(len(files.skipped), 'file')} that "
            f"{'is' if len(files.skipped) == 1 else 'are'} not audio ({first_few(files.skipped, NAMES_SHOWN)})")
    info_path = os.path.join(root, INFO_FILE)
    if os.path.isdir(info_path):
        raise ConfigError(f"--input-dir {root}: {info_path} is a folder, so the labels cannot be written there; "
                          "move it away")
    try:
        check_writable_folder(root)
    except OSError as exc:
        raise ConfigError(f"--input-dir {root}: cannot write {INFO_FILE} there ({exc.strerror}); "
                          "copy the files to a folder you can write to") from None
    return files


class FolderTarget:
    """Audio files in a folder, labeled without Studio; the labels go into an info.labels file.

    ``DIR/info.labels`` lists every file labeled by this run, with multi-label segments in its own
    frame indices, so ``edge-impulse-uploader --info-file DIR/info.labels`` uploads the folder
    already labeled. A file that fails is left out rather than kept from an earlier info.labels:
    that entry may come from other settings or an older version of the file, and the uploader
    would take it for this run's. The log names what is left out; when no file is labeled the
    earlier info.labels stays, and the log says it is from an earlier run.
    """

    verb = "labeled"
    parallel = 4  # files decoded ahead, and labels stored, at once

    def __init__(self, root: str, settings: Settings, files: Sequence[str], category: str = "split"):
        self.root, self.settings, self.category = root, settings, category
        self.files = list(files)
        self.info_path = os.path.join(root, INFO_FILE)
        self.wrote = False  # info.labels was replaced
        self.unsaved: str | None = None  # why the labels could not be saved, if they could not
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
        """Write info.labels once, atomically, with every file that was labeled; say what it leaves out."""
        missing = len(self.files) - len(self._entries)
        if not self._entries:
            if os.path.exists(self.info_path):
                log(f"WARNING: no file was labeled, so {self.info_path} was not updated: it is from an earlier run")
            return
        document = {"version": 1, "files": [self._entries[k] for k in sorted(self._entries)]}
        try:
            write_file_atomically(self.info_path, json.dumps(document, indent=2))
        except OSError as exc:
            self.unsaved = f"could not write {self.info_path} ({exc.strerror}); no label of this run was saved"
            return
        self.wrote = True
        left_out = f"; {plural(missing, 'file')} not labeled {'is' if missing == 1 else 'are'} left out" \
            if missing else ""
        log(f"Wrote {self.info_path} ({plural(len(self._entries), 'file')}{left_out}); upload with "
            f"edge-impulse-uploader --info-file {shlex.quote(self.info_path)}")
