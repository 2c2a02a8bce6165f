"""What is written about a sample: the disabled mark, and when the block disables or enables a sample."""

import pytest

from labeler.core import LabelSpec, Settings
from labeler.records import (DISABLE, DISABLED_KEY, ENABLE, STATUS_KEY, block_metadata, disabled_mark_after,
                             enabled_change)

OURS = {DISABLED_KEY: "other-only", STATUS_KEY: "done"}
# The mark beside "labeling": a disable that was refused or cut short (earlier versions wrote the
# mark before disabling), after which someone may have disabled the sample by hand.
UNFINISHED = {DISABLED_KEY: "other-only", STATUS_KEY: "labeling"}
SETTINGS = Settings((LabelSpec("Speech", "speech"),), "other", 1000, 1000, 0.2, "m")


@pytest.mark.parametrize("metadata, is_disabled, found, disable_other, expected", [
    ({}, False, False, True, DISABLE),  # nothing of interest, asked to disable
    ({}, False, False, False, None),  # not asked
    ({}, True, False, True, None),  # already disabled (by someone): nothing to do
    ({}, False, True, True, None),  # something found: stays enabled
    (OURS, True, True, False, ENABLE),  # we disabled it and now find something, even without the flag
    (OURS, True, True, True, ENABLE),
    ({}, True, True, True, None),  # someone else disabled it: never enabled
    (OURS, True, False, True, None),  # still nothing: stays disabled
    (UNFINISHED, True, True, True, None),  # the mark is not trusted: never enabled
    (UNFINISHED, True, True, False, None),
])
def test_enabled_change(metadata, is_disabled, found, disable_other, expected):
    assert enabled_change(metadata, is_disabled, found, disable_other) == expected


@pytest.mark.parametrize("metadata, is_disabled, change, expected", [
    ({}, False, DISABLE, True),
    (OURS, True, ENABLE, False),
    (OURS, True, None, True),  # still disabled by us
    (OURS, False, None, False),  # someone enabled it by hand: the mark is stale
    ({}, True, None, False),  # disabled by someone else: never claimed
    (UNFINISHED, True, None, False),  # an untrusted mark is dropped, never claimed
    (UNFINISHED, False, None, False),
])
def test_disabled_mark_after(metadata, is_disabled, change, expected):
    assert disabled_mark_after(metadata, is_disabled, change) is expected


def test_block_metadata_sets_drops_or_keeps_the_mark():
    assert block_metadata({}, SETTINGS, "done", True)[DISABLED_KEY] == "other-only"
    assert DISABLED_KEY not in block_metadata(OURS, SETTINGS, "done", False)
    assert block_metadata(OURS, SETTINGS, "done")[DISABLED_KEY] == "other-only"
    assert block_metadata({"site": "lab"}, SETTINGS, "done", False)["site"] == "lab"
