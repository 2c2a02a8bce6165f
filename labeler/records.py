"""What the block writes about a sample, wherever it goes (Studio, info.labels, the report): the
JSON of a segment, this block's metadata keys, and the labeling -> done bracket that lets a rerun
tell a finished sample from a half-written one.

May import: ``core`` and ``timeline``.
"""

from __future__ import annotations

from .core import BLOCK_NAME, Settings
from .timeline import Segment

STATUS_KEY, SETTINGS_KEY = "ast_status", "ast_settings"
STATUS_LABELING, STATUS_DONE = "labeling", "done"


def segment_json(segment: Segment) -> dict:
    """A structured label as Studio's API and info.labels spell it (inclusive endIndex)."""
    return {"startIndex": segment.start_ix, "endIndex": segment.end_ix, "label": segment.label}


def block_metadata(existing: dict[str, str], settings: Settings, status: str) -> dict[str, str]:
    """The sample's metadata plus this block's keys (Studio replaces the whole map)."""
    return {
        **existing,
        "labeled_by": BLOCK_NAME,
        "ast_model": settings.model,
        "ast_labels": "; ".join(s.output_label for s in settings.specs),
        SETTINGS_KEY: settings.fingerprint(),
        STATUS_KEY: status,
    }


def already_labeled(metadata: dict[str, str], settings: Settings) -> bool:
    """True when a finished run with the same settings labeled this sample (manual edits since are kept)."""
    return metadata.get(STATUS_KEY) == STATUS_DONE and metadata.get(SETTINGS_KEY) == settings.fingerprint()
