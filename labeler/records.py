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
# The disabled mark: this block disabled the sample (or was disabling it) because it found only
# "other" in it. A disabled sample carrying it is the block's to enable again, whatever
# ``ast_status`` says: the labeling mark written before a disable already carries it (the intent),
# so a disable that lands and a run that stops before the done mark still leave it. Only a write
# that finds the sample enabled drops it. Studio keeps no record of who disabled a sample, so a
# sample someone else disabled is never enabled, except one the block disabled (or was disabling)
# that was later enabled and disabled again by hand.
DISABLED_KEY, DISABLED_OTHER_ONLY = "ast_disabled", "other-only"
DISABLE, ENABLE = "disable", "enable"


def segment_json(segment: Segment) -> dict:
    """A structured label as Studio's API and info.labels spell it (inclusive endIndex)."""
    return {"startIndex": segment.start_ix, "endIndex": segment.end_ix, "label": segment.label}


def block_metadata(existing: dict[str, str], settings: Settings, status: str,
                   disabled_mark: bool | None = None) -> dict[str, str]:
    """The sample's metadata plus this block's keys (Studio replaces the whole map).

    ``disabled_mark`` sets (True) or drops (False) the disabled mark; None keeps what is there.
    """
    metadata = {
        **existing,
        "labeled_by": BLOCK_NAME,
        "ast_model": settings.model,
        "ast_labels": "; ".join(s.output_label for s in settings.specs),
        SETTINGS_KEY: settings.fingerprint(),
        STATUS_KEY: status,
    }
    if disabled_mark is True:
        metadata[DISABLED_KEY] = DISABLED_OTHER_ONLY
    elif disabled_mark is False:
        metadata.pop(DISABLED_KEY, None)
    return metadata


def disabled_by_block(metadata: dict[str, str], is_disabled: bool) -> bool:
    """Whether the sample is disabled and carries the block's mark: the block may enable it again."""
    return is_disabled and metadata.get(DISABLED_KEY) == DISABLED_OTHER_ONLY


def enabled_change(metadata: dict[str, str], is_disabled: bool, found_interest: bool,
                   disable_other: bool) -> str | None:
    """DISABLE, ENABLE or None for a labeled sample.

    Disable: asked to, nothing of interest found, and the sample is enabled. Enable: something of
    interest found in a sample this block disabled. A sample someone else disabled stays disabled.
    """
    if disable_other and not found_interest and not is_disabled:
        return DISABLE
    if found_interest and disabled_by_block(metadata, is_disabled):
        return ENABLE
    return None


def disabled_mark(metadata: dict[str, str], is_disabled: bool, change: str | None, done: bool) -> bool:
    """Whether the labeling mark (``done`` False) or the done mark written around ``change`` carries the disabled mark.

    Before a disable the mark records the intent, and after it the fact. Before an enable the mark
    stays (the enable may not land); the done mark after it is written while the sample is enabled,
    so it drops the mark. Without a change the mark stays only on a sample that is disabled now.
    """
    if change == DISABLE:
        return True
    if change == ENABLE:
        return not done
    return disabled_by_block(metadata, is_disabled)


def already_labeled(metadata: dict[str, str], settings: Settings) -> bool:
    """True when a finished run with the same settings labeled this sample (manual edits since are kept)."""
    return metadata.get(STATUS_KEY) == STATUS_DONE and metadata.get(SETTINGS_KEY) == settings.fingerprint()
