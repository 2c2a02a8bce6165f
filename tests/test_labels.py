"""--audioset-labels: parsing, renames, thresholds and validation against the model's labels."""

import pytest

from inference_emulator import LABELS
from labeler.core import ConfigError, LabelSpec
from labeler.labels import parse_label_specs, split_label_lines


def test_lines_split_on_real_and_escaped_newlines():
    assert split_label_lines("Speech\\nMusic\nDog\n\n  ") == ["Speech", "Music", "Dog"]


def test_plain_label_is_written_exactly_as_typed_and_matched_case_insensitively():
    (spec,) = parse_label_specs("  speech  ", LABELS)
    assert spec == LabelSpec("Speech", "speech", None)


def test_rename_keeps_the_case_the_user_typed():
    (spec,) = parse_label_specs("Speech (Talking)", LABELS)
    assert spec == LabelSpec("Speech", "Talking", None)


def test_rename_with_threshold():
    (spec,) = parse_label_specs("dog (Doggo, 0.35)", LABELS)
    assert spec == LabelSpec("Dog", "Doggo", 0.35)


def test_label_with_parentheses_is_a_label_not_a_rename():
    (spec,) = parse_label_specs("roaring cats (lions, tigers)", LABELS)
    assert spec == LabelSpec("Roaring cats (lions, tigers)", "roaring cats (lions, tigers)", None)


def test_label_with_parentheses_can_be_renamed():
    (spec,) = parse_label_specs("Roaring cats (lions, tigers) (big cat, 0.5)", LABELS)
    assert spec == LabelSpec("Roaring cats (lions, tigers)", "big cat", 0.5)


def test_label_with_comma_renamed_without_threshold():
    (spec,) = parse_label_specs("Male speech, man speaking (man, talking)", LABELS)
    assert spec == LabelSpec("Male speech, man speaking", "man, talking", None)


def test_threshold_only_keeps_the_model_label_as_written():
    (spec,) = parse_label_specs("Music (, 0.7)", LABELS)
    assert spec == LabelSpec("Music", "Music", 0.7)


@pytest.mark.parametrize("line", ["Dog (dog, 1.5)", "Dog (dog, -0.1)"])
def test_threshold_out_of_range_is_rejected(line):
    with pytest.raises(ConfigError, match="out of range"):
        parse_label_specs(line, LABELS)


def test_unknown_label_suggests_close_names():
    with pytest.raises(ConfigError) as err:
        parse_label_specs("Speech\\nMusik", LABELS)
    assert "'Musik'" in str(err.value) and "Did you mean: 'Music'" in str(err.value)


def test_unknown_renamed_label_is_reported_by_its_model_name():
    with pytest.raises(ConfigError, match="unknown AudioSet label 'Dogg'"):
        parse_label_specs("Dogg (dog)", LABELS)


def test_duplicate_model_label_is_rejected():
    with pytest.raises(ConfigError, match="listed twice"):
        parse_label_specs("Speech\\nspeech (talk)", LABELS)


def test_empty_labels_are_rejected():
    with pytest.raises(ConfigError, match="empty"):
        parse_label_specs(" \\n ", LABELS)


def test_without_a_label_list_lines_are_taken_as_written():
    specs = parse_label_specs("Speech\\nDog (dog, 0.3)", None)
    assert specs == (LabelSpec("Speech", "Speech"), LabelSpec("Dog", "dog", 0.3))
