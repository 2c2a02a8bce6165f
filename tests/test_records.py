"""What is written about a sample: the disabled mark, and when the block disables or enables a sample."""

import pytest

from labeler.core import LabelSpec, Settings
from labeler.records import (DISABLE, DISABLED_KEY, ENABLE, STATUS_KEY, block_metadata, disabled_mark,
                             enabled_change)

OURS = {DISABLED_KEY: "other-only", STATUS_KEY: "done"}
# The mark beside "labeling": a disable that landed, or an enable that did not, before the run
# stopped. It is trusted like a finished one.
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
    (UNFINISHED, True, True, True, ENABLE),  # whatever ast_status says
    (UNFINISHED, True, True, False, ENABLE),
    (OURS, False, True, True, None),  # enabled by hand since: nothing to enable
])
def test_enabled_change(metadata, is_disabled, found, disable_other, expected):
    assert enabled_change(metadata, is_disabled, found, disable_other) == expected


@pytest.mark.parametrize("metadata, is_disabled, change, done, expected", [
    ({}, False, DISABLE, False, True),  # the labeling mark before a disable records the intent
    ({}, False, DISABLE, True, True),  # the done mark after it, the fact
    (OURS, True, ENABLE, False, True),  # before an enable the mark stays: the enable may not land
    (OURS, True, ENABLE, True, False),  # the done mark after an enable is written while enabled
    (OURS, True, None, True, True),  # still disabled by us
    (UNFINISHED, True, None, False, True),
    (UNFINISHED, True, None, True, True),
    (OURS, False, None, True, False),  # someone enabled it by hand: the mark is stale
    (UNFINISHED, False, None, False, False),  # a disable that never landed: the intent is dropped
    ({}, True, None, True, False),  # disabled by someone else: never claimed
])
def test_disabled_mark(metadata, is_disabled, change, done, expected):
    assert disabled_mark(metadata, is_disabled, change, done) is expected


def test_block_metadata_sets_drops_or_keeps_the_mark():
    assert block_metadata({}, SETTINGS, "done", True)[DISABLED_KEY] == "other-only"
    assert DISABLED_KEY not in block_metadata(OURS, SETTINGS, "done", False)
    assert block_metadata(OURS, SETTINGS, "done")[DISABLED_KEY] == "other-only"
    assert block_metadata({"site": "lab"}, SETTINGS, "done", False)["site"] == "lab"
