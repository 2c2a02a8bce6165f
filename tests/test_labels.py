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
    assert "'Musik'" in str(err.value) and "did you mean: 'Music'" in str(err.value)


def test_unknown_renamed_label_is_reported_by_its_model_name():
    with pytest.raises(ConfigError, match="unknown label 'Dogg'"):
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


@pytest.mark.parametrize("line, threshold", [("Dog (dog, 5e-1)", 0.5), ("Dog (dog, 2.5E-1)", 0.25),
                                             ("Dog (dog, .3)", 0.3), ("Dog (dog, 1.)", 1.0)])
def test_thresholds_in_any_decimal_notation(line, threshold):
    (spec,) = parse_label_specs(line, LABELS)
    assert spec == LabelSpec("Dog", "dog", threshold)


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_thresholds_at_both_ends_of_the_range_are_accepted(threshold):
    (spec,) = parse_label_specs(f"Dog (dog, {threshold})", LABELS)
    assert spec.threshold == threshold


def test_out_of_range_message_names_the_line_and_the_range():
    with pytest.raises(ConfigError) as err:
        parse_label_specs("Speech\\nDog (dog, 1.5)", LABELS)
    assert str(err.value) == ("--audioset-labels: threshold 1.5 in line 'Dog (dog, 1.5)' is out of range; "
                              "use a value from 0 to 1")


def test_rename_with_a_comma_and_a_threshold_splits_at_the_last_comma():
    (spec,) = parse_label_specs("Male speech, man speaking (man, talking, 0.3)", LABELS)
    assert spec == LabelSpec("Male speech, man speaking", "man, talking", 0.3)


def test_suggestions_are_the_close_names_in_order_of_likeness():
    # "Silence" is only half like "spech": still worth naming.
    with pytest.raises(ConfigError) as err:
        parse_label_specs("Spech", LABELS)
    assert str(err.value) == ("unknown label 'Spech' in --audioset-labels (the model has no such class; "
                              "did you mean: 'Speech', 'Silence'?)")


def test_at_most_three_suggestions():
    with pytest.raises(ConfigError) as err:
        parse_label_specs("Dogg", ["Dog", "Dogs", "Doge", "Dodge", "Speech"])
    assert str(err.value).endswith("did you mean: 'Dog', 'Dogs', 'Doge'?)")


def test_a_label_like_none_gets_no_suggestion_and_every_unknown_label_is_named():
    with pytest.raises(ConfigError) as err:
        parse_label_specs("Cat\\nDog\\nSound", LABELS)
    assert str(err.value) == ("unknown label 'Cat' in --audioset-labels (the model has no such class); "
                              "unknown label 'Sound' in --audioset-labels (the model has no such class)")


def test_empty_labels_message_says_what_to_give():
    with pytest.raises(ConfigError) as err:
        parse_label_specs("\\n", LABELS)
    assert str(err.value) == "--audioset-labels is empty; give at least one AudioSet label, one per line"


# --- a mistyped threshold is refused with the corrected line, never written as a label name ----------


@pytest.mark.parametrize("line, fix", [
    ("Dog (0.75)", "gives a threshold where the new name goes; write 'Dog (, 0.75)'"),
    ("Dog (.5)", "gives a threshold where the new name goes; write 'Dog (, .5)'"),
    ("Dog (dog 0.4)", "has no comma between the new name and the threshold; write 'Dog (dog, 0.4)'"),
    ("Dog (dog; 0.4)", "has no comma between the new name and the threshold; write 'Dog (dog, 0.4)'"),
    ("Dog (dog: 0.4)", "has no comma between the new name and the threshold; write 'Dog (dog, 0.4)'"),
    ("Dog (dogs, cats 0.4)", "has no comma between the new name and the threshold; write 'Dog (dogs, cats, 0.4)'"),
    ("Dog (dog 40%)", "has no comma between the new name and the threshold; write 'Dog (dog, 0.4)'"),
])
def test_threshold_without_its_comma_is_refused_with_the_corrected_line(line, fix):
    with pytest.raises(ConfigError) as err:
        parse_label_specs(f"Speech\\n{line}", LABELS)
    assert str(err.value) == f"--audioset-labels: line {line!r} {fix}"


@pytest.mark.parametrize("line, percentage, fix", [
    ("Dog (dog, 50%)", "50%", "Dog (dog, 0.5)"),
    ("Dog (dog, 33.3 %)", "33.3 %", "Dog (dog, 0.333)"),
    ("Dog (50%)", "50%", "Dog (, 0.5)"),
])
def test_percentage_threshold_is_refused_with_the_fraction(line, percentage, fix):
    with pytest.raises(ConfigError) as err:
        parse_label_specs(line, LABELS)
    assert str(err.value) == (f"--audioset-labels: threshold {percentage} in line {line!r} is a percentage; "
                              f"thresholds are from 0 to 1: write {fix!r}")


@pytest.mark.parametrize("line, text, example, plain", [
    ("Dog (dog, nan)", "nan", "Dog (dog, 0.5)", "Dog (dog)"),
    ("Dog (dog, inf)", "inf", "Dog (dog, 0.5)", "Dog (dog)"),
    ("Dog (dog, -Infinity)", "-Infinity", "Dog (dog, 0.5)", "Dog (dog)"),
    ("Dog (dog, 0.5.)", "0.5.", "Dog (dog, 0.5)", "Dog (dog)"),
    ("Dog (dog, )", "", "Dog (dog, 0.5)", "Dog (dog)"),
    ("Dog ( , )", "", "Dog (, 0.5)", "Dog"),
])
def test_number_like_text_after_the_last_comma_must_be_a_number_from_0_to_1(line, text, example, plain):
    with pytest.raises(ConfigError) as err:
        parse_label_specs(line, LABELS)
    assert str(err.value) == (f"--audioset-labels: threshold {text!r} in line {line!r} is not a number from 0 to 1; "
                              f"write e.g. {example!r}, or {plain!r} to use --min-confidence")


@pytest.mark.parametrize("line", ["Dog (1.5)", "Dog (dog, 150%)"])
def test_a_misplaced_or_percentage_threshold_out_of_range_is_called_out_of_range(line):
    with pytest.raises(ConfigError, match="is out of range; use a value from 0 to 1"):
        parse_label_specs(line, LABELS)


@pytest.mark.parametrize("line, spec", [
    ("Dog (dogs, cats)", LabelSpec("Dog", "dogs, cats")),  # text after the comma is not number-like
    ("Dog (dog, 0.35)", LabelSpec("Dog", "dog", 0.35)),
    ("Music (, 0.6)", LabelSpec("Music", "Music", 0.6)),
    ("Dog (dog, 1)", LabelSpec("Dog", "dog", 1.0)),
    ("Dog (dog, 0)", LabelSpec("Dog", "dog", 0.0)),
    ("Dog (dog, 1e-1)", LabelSpec("Dog", "dog", 0.1)),
    ("Dog (k9 unit 7)", LabelSpec("Dog", "k9 unit 7")),  # an integer last word stays in the name
    ("Dog (version 2.0)", LabelSpec("Dog", "version 2.0")),  # a last word outside 0..1 is no threshold
    ("Dog (dog 0.4, 0.3)", LabelSpec("Dog", "dog 0.4", 0.3)),  # with the comma, the name may end in a number
])
def test_lines_that_still_parse_as_before(line, spec):
    assert parse_label_specs(line, LABELS) == (spec,)


def test_an_integer_alone_in_the_parentheses_is_a_rename():
    (spec,) = parse_label_specs("zero (0)", ["zero", "one"])  # a spoken-digits model
    assert spec == LabelSpec("zero", "0")


def test_a_model_label_that_looks_like_a_misplaced_threshold_is_matched_first():
    (spec,) = parse_label_specs("Hum (0.5)", ["Hum (0.5)", "Hum"])
    assert spec == LabelSpec("Hum (0.5)", "Hum (0.5)")
