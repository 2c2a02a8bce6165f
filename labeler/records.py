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
# Set while the sample is disabled because this block found only "other" in it: the block may
# enable such a sample again, and never one that someone else disabled. The mark is written only
# with the done mark, after the disable succeeded, and trusted only beside a done mark: one beside
# "labeling" may come from a disable that was refused or cut short (earlier versions wrote the
# mark before disabling), after which someone may have disabled the sample by hand.
DISABLED_KEY, DISABLED_OTHER_ONLY = "ast_disabled", "other-only"
DISABLE, ENABLE = "disable", "enable"


def segment_json(segment: Segment) -> dict:
    """A structured label as Studio's API and info.labels spell it (inclusive endIndex)."""
    return {"startIndex": segment.start_ix, "endIndex": segment.end_ix, "label": segment.label}


def block_metadata(existing: dict[str, str], settings: Settings, status: str,
                   disabled_by_block: bool | None = None) -> dict[str, str]:
    """The sample's metadata plus this block's keys (Studio replaces the whole map).

    ``disabled_by_block`` sets (True) or drops (False) the disabled mark; None keeps what is there.
    """
    metadata = {
        **existing,
        "labeled_by": BLOCK_NAME,
        "ast_model": settings.model,
        "ast_labels": "; ".join(s.output_label for s in settings.specs),
        SETTINGS_KEY: settings.fingerprint(),
        STATUS_KEY: status,
    }
    if disabled_by_block is True:
        metadata[DISABLED_KEY] = DISABLED_OTHER_ONLY
    elif disabled_by_block is False:
        metadata.pop(DISABLED_KEY, None)
    return metadata


def disabled_by_block(metadata: dict[str, str]) -> bool:
    """Whether the metadata says, in a finished record, that this block disabled the sample."""
    return metadata.get(DISABLED_KEY) == DISABLED_OTHER_ONLY and metadata.get(STATUS_KEY) == STATUS_DONE


def enabled_change(metadata: dict[str, str], is_disabled: bool, found_interest: bool,
                   disable_other: bool) -> str | None:
    """DISABLE, ENABLE or None for a labeled sample.

    Disable: asked to, nothing of interest found, and the sample is enabled. Enable: something of
    interest found in a sample this block disabled. A sample someone else disabled stays disabled.
    """
    if disable_other and not found_interest and not is_disabled:
        return DISABLE
    if found_interest and is_disabled and disabled_by_block(metadata):
        return ENABLE
    return None


def disabled_mark_after(metadata: dict[str, str], is_disabled: bool, change: str | None) -> bool:
    """Whether the sample carries the disabled mark once ``change`` is written (``None``: as it is now).

    A stale mark (the sample was enabled by hand, or the mark is not trusted) is dropped.
    """
    if change is not None:
        return change == DISABLE
    return is_disabled and disabled_by_block(metadata)


def already_labeled(metadata: dict[str, str], settings: Settings) -> bool:
    """True when a finished run with the same settings labeled this sample (manual edits since are kept)."""
    return metadata.get(STATUS_KEY) == STATUS_DONE and metadata.get(SETTINGS_KEY) == settings.fingerprint()
