"""The folder target: audio files on disk labeled without Studio, with every label written at the
end into one ``info.labels`` file that ``edge-impulse-uploader --info-file`` understands. An
``info.labels`` already there (an Edge Impulse export, an earlier run) is updated, never replaced.

May import: ``core``, ``audio``, ``timeline``, ``records``.
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from .audio import BadAudio, UndecodableAudio, decode_16k
from .core import (BLOCK_NAME, ConfigError, LoadedSample, SampleError, SampleInfo, Settings, check_writable_folder,
                   first_few, log, plural, write_file_atomically)
from .records import STATUS_DONE, block_metadata, segment_json
from .timeline import Labeling

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
INFO_FILE = "info.labels"
BACKUP_SUFFIX = ".orig"  # info.labels as it was before the block first updated entries it did not write
INFO_VERSION = 1  # the only version the uploader reads
NAMES_SHOWN = 3  # file names shown in a log line


class BadInfoLabels(Exception):
    """An existing info.labels the block cannot update; the message says why."""


@dataclass(frozen=True)
class InfoLabels:
    """An info.labels found in the folder before the run: its text as read (for the backup) and its JSON."""

    text: str
    document: dict


@dataclass(frozen=True)
class FolderFiles:
    """What --input-dir holds: the audio files to label, the other files left alone (paths relative
    to it), and the info.labels already there, if any."""

    audio: tuple[str, ...]
    skipped: tuple[str, ...]
    existing: InfoLabels | None = None


def find_files(root: str) -> FolderFiles:
    """Sort the folder's files into audio and the rest; the block's own info.labels is neither."""
    found = sorted(os.path.relpath(os.path.join(folder, name), root)
                   for folder, _, names in os.walk(root) for name in names)
    audio = tuple(f for f in found if f.lower().endswith(AUDIO_SUFFIXES))
    skipped = tuple(f for f in found if not f.lower().endswith(AUDIO_SUFFIXES) and f != INFO_FILE)
    return FolderFiles(audio, skipped)


def open_folder(root: str) -> FolderFiles:
    """Check --input-dir before anything is loaded: audio files to label, an info.labels there that
    can be updated, and the folder writable."""
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
        existing = read_info_labels(info_path)
    except BadInfoLabels as exc:
        raise ConfigError(f"--input-dir {root}: {info_path} is not an info.labels file the block can update ({exc}); "
                          "move it away or fix it, then rerun") from None
    try:
        check_writable_folder(root)
    except OSError as exc:
        raise ConfigError(f"--input-dir {root}: cannot write {INFO_FILE} there ({exc.strerror}); "
                          "copy the files to a folder you can write to") from None
    return FolderFiles(files.audio, files.skipped, existing)


def read_info_labels(path: str) -> InfoLabels | None:
    """The info.labels at ``path`` (None if there is none), checked as the uploader reads it, plus a
    string ``path`` in every entry; a UTF-8 byte order mark is accepted. Raises BadInfoLabels."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadInfoLabels(f"cannot read it: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInfoLabels("it is not UTF-8 text") from None
    body = text.removeprefix("\ufeff")
    if not body.strip():
        raise BadInfoLabels("it is empty")
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as exc:
        detail = f": {exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise BadInfoLabels(f"it is not JSON{detail}") from None
    problem = document_problem(document)
    if problem:
        raise BadInfoLabels(problem)
    return InfoLabels(text, document)


def document_problem(document) -> str | None:
    """Why a parsed info.labels cannot be updated, or None."""
    if not isinstance(document, dict):
        return "it is not a JSON object"
    if "version" not in document:
        return f'it has no "version" (expected {INFO_VERSION})'
    version = document["version"]
    if isinstance(version, bool) or version != INFO_VERSION:
        return f'its "version" is {json.dumps(version)[:20]}, not {INFO_VERSION}'
    if not isinstance(document.get("files"), list):
        return 'it has no "files" list'
    for i, entry in enumerate(document["files"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            return f'files[{i}] is not an object with a string "path"'
    return None


def same_file_key(path: str) -> str:
    """A path as the uploader resolves it against the folder: "./" and Windows separators do not matter."""
    return posixpath.normpath(path.replace("\\", "/"))


def written_by_block(entry: dict) -> bool:
    metadata = entry.get("metadata")
    return isinstance(metadata, dict) and metadata.get("labeled_by") == BLOCK_NAME


@dataclass
class Merged:
    """info.labels after this run's labels went in, and what happened to each entry."""

    document: dict
    labeled: int = 0
    new: int = 0
    not_audio: int = 0
    missing: list[str] = field(default_factory=list)  # entries whose file is not in the folder
    not_labeled: list[str] = field(default_factory=list)  # audio files that failed or were not reached

    @property
    def kept(self) -> int:
        return self.not_audio + len(self.missing) + len(self.not_labeled)


def merge(existing: dict | None, labeled: Sequence[dict], root: str, audio: Sequence[str]) -> Merged:
    """Update ``existing`` with this run's entries as Studio would relabel a sample: the label is
    replaced, the block's metadata keys are set, every other key and every other entry stays.
    Existing entries keep their order; files with no entry yet follow in file order."""
    fresh = {same_file_key(e["path"]): e for e in labeled}
    audio_keys = {same_file_key(p) for p in audio}
    merged = Merged({**(existing or {"version": INFO_VERSION}), "files": []}, labeled=len(labeled))
    updated = set()
    for entry in (existing or {}).get("files", []):
        key = same_file_key(entry["path"])
        if key in fresh:
            metadata = entry.get("metadata") if isinstance(entry.get("metadata"), dict) else {}
            entry = {**entry, "label": fresh[key]["label"], "metadata": {**metadata, **fresh[key]["metadata"]}}
            updated.add(key)
        elif key in audio_keys:
            merged.not_labeled.append(entry["path"])
        elif os.path.lexists(os.path.join(root, key)):
            merged.not_audio += 1
        else:
            merged.missing.append(entry["path"])
        merged.document["files"].append(entry)
    added = [entry for key, entry in fresh.items() if key not in updated]
    merged.document["files"] += added
    merged.new = len(added)
    return merged


class FolderTarget:
    """Audio files in a folder, labeled without Studio; the labels go into an info.labels file.

    ``DIR/info.labels`` gets an entry for every file labeled by this run, with multi-label segments
    in its own frame indices, so ``edge-impulse-uploader --info-file DIR/info.labels`` uploads the
    folder already labeled. An info.labels already there is updated the way Studio relabels a
    sample: a labeled file's entry gets the new label and the block's metadata keys and keeps its
    category, name and other keys; every other entry (a file that failed or was not reached, a
    file that is not audio or is gone) stays as it was, as an unwritten Studio sample keeps its
    labels, and unknown top-level keys stay too. Before the first update of a file holding entries
    the block did not write, it is copied once to ``info.labels.orig``. The log says what was
    labeled and what was kept; when no file is labeled the file is not touched, and the log says
    it is from an earlier run.
    """

    verb = "labeled"
    parallel = 4  # files decoded ahead, and labels stored, at once
    rerun_skips_finished = False  # a rerun labels every file again

    def __init__(self, root: str, settings: Settings, files: Sequence[str], category: str = "split",
                 existing: InfoLabels | None = None):
        self.root, self.settings, self.category, self.existing = root, settings, category, existing
        self.files = list(files)
        self.info_path = os.path.join(root, INFO_FILE)
        self.backup_path = self.info_path + BACKUP_SUFFIX
        self.wrote = False  # info.labels was written
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
        """Write info.labels once, atomically, with this run's labels merged in; say what it kept."""
        if not self._entries:
            if self.existing is not None:
                log(f"WARNING: no file was labeled, so {self.info_path} was not updated: it is from an earlier run")
            return
        merged = merge(self.existing.document if self.existing else None,
                       [self._entries[k] for k in sorted(self._entries)], self.root, self.files)
        try:
            self._back_up()
        except OSError as exc:
            self.unsaved = (f"could not write {self.backup_path} ({exc.strerror}), so {self.info_path} was not "
                            "updated; no label of this run was saved")
            return
        try:
            write_file_atomically(self.info_path, json.dumps(merged.document, indent=2))
        except OSError as exc:
            self.unsaved = f"could not write {self.info_path} ({exc.strerror}); no label of this run was saved"
            return
        self.wrote = True
        self._log(merged)

    def _back_up(self) -> None:
        """Copy info.labels to info.labels.orig once, if it holds entries the block did not write."""
        if self.existing is None or os.path.lexists(self.backup_path) or \
                all(written_by_block(e) for e in self.existing.document["files"]):
            return
        write_file_atomically(self.backup_path, self.existing.text)
        log(f"Copied {self.info_path} as it was to {self.backup_path} before updating it")

    def _log(self, merged: Merged) -> None:
        missing = merged.missing
        if missing:
            log(f"WARNING: {self.info_path} lists {plural(len(missing), 'file')} not found in {self.root} "
                f"({first_few(missing, NAMES_SHOWN)}); kept "
                f"{'its entry as it was' if len(missing) == 1 else 'their entries as they were'}")
        if self.existing is None:
            what = f"Wrote {self.info_path}: {merged.labeled} labeled"
        else:
            new = f" ({merged.new} new)" if merged.new else ""
            why = [f"{merged.not_audio} not audio" if merged.not_audio else "",
                   f"{len(missing)} not found" if missing else "",
                   f"{len(merged.not_labeled)} not labeled this run: {first_few(merged.not_labeled, NAMES_SHOWN)}"
                   if merged.not_labeled else ""]
            kept = f", {merged.kept} kept as they were ({', '.join(w for w in why if w)})" if merged.kept else ""
            what = f"Updated {self.info_path}: {merged.labeled} labeled{new}{kept}"
        log(f"{what}; upload with edge-impulse-uploader --info-file {shlex.quote(self.info_path)}")
