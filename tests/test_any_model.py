"""Any transformers audio classifier on the local backend: each model hears its own input, scores
as transformers' own pipeline does with the score function the rule picks, batches never change a
score, and the models the block cannot run faithfully are refused before any sample is read."""

import json

import numpy as np
import pytest

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, noise, tone
from conftest import DOG_LOGITS
from inference_emulator import LABELS
from labeler.classifiers.local import LocalClassifier
from labeler.models import UNLIMITED_MODEL_CAP_SAMPLES
from tiny_models import make_tiny_ast, make_tiny_ctc, make_tiny_wav2vec2

RATE = 16000
MAX_SCORE_DIFFERENCE = 1e-4  # the block against transformers' pipeline, float32


def content_windows():
    """Tones, noise and mixes of different lengths (two of one length), shorter and longer than the
    1.0 s and 1.3 s models hear: the scores of a model that reads its input vary across them."""
    return [tone(MUSIC_HZ, 1.0, RATE), noise(0.7, RATE, seed=1), tone(SPEECH_HZ, 0.45, RATE, 0.3),
            concat(tone(DOG_HZ, 0.5, RATE), noise(0.8, RATE, seed=2)), tone(DOG_HZ, 2.5, RATE, 0.2),
            concat(noise(0.3, RATE, seed=3, amplitude=0.05), tone(SPEECH_HZ, 0.6, RATE)), tone(MUSIC_HZ, 0.03, RATE),
            noise(1.0, RATE, seed=4, amplitude=0.6)]


def pipeline_scores(path, windows, function_to_apply):
    """transformers' own pipeline("audio-classification"), one window at a time, every label."""
    import torch
    from transformers import pipeline

    classify = pipeline("audio-classification", model=str(path), dtype=torch.float32, device="cpu")
    names = [classify.model.config.id2label[i] for i in range(classify.model.config.num_labels)]
    rows = []
    for window in windows:
        answer = {a["label"]: a["score"] for a in classify(window, top_k=None, function_to_apply=function_to_apply)}
        rows.append([answer[name] for name in names])
    return np.array(rows)


@pytest.fixture
def model_folder(request, tiny_model_folder):
    """The trained AST (trained only when a test asks for it) or a tiny model, by name."""
    def folder(name):
        return request.getfixturevalue("trained_ast").path if name == "trained-ast" else tiny_model_folder(name)

    return folder


# --- the trained test AST ---------------------------------------------------------------------------


def test_the_trained_ast_classifies_its_evaluation_windows(trained_ast):
    scores = LocalClassifier(str(trained_ast.path), "cpu", "float32").classify(trained_ast.windows)
    best = [LABELS[i] for i in scores.argmax(axis=1)]
    assert np.mean([b == expected for b, expected in zip(best, trained_ast.labels)]) >= 0.9
    assert set(trained_ast.labels) == {"Silence", "Vehicle", "Music", "Speech", "Dog"}  # every class is evaluated


# --- scores as transformers' pipeline gives them --------------------------------------------------------


@pytest.mark.parametrize("name, rule", [
    ("trained-ast", "sigmoid"),  # AST, problem_type unset: AST trains with a sigmoid loss
    ("speech-commands", "softmax"),  # 1.28 s, 35 words, its own mean and std; single-label in its config
    ("speech-commands-unset", "sigmoid"),
    ("audioset-stride-12", "sigmoid"),  # another patch stride
    ("wav2vec2-group", "softmax"),  # group norm, no attention mask: windows batched by length
    ("wav2vec2-layer", "softmax"),  # layer norm, attention mask: windows padded in one batch
    ("whisper", "softmax"),  # 80 mel bins over 30 s, from its own extractor
])
def test_scores_equal_transformers_pipeline_window_by_window(model_folder, name, rule):
    folder = model_folder(name)
    classifier = LocalClassifier(str(folder), "cpu", "float32", batch_size=4)
    assert classifier.score_function == rule
    windows = content_windows()
    reference = pipeline_scores(folder, windows, rule)
    assert np.abs(classifier.classify(windows) - reference).max() < MAX_SCORE_DIFFERENCE
    assert np.ptp(reference, axis=0).max() > 100 * MAX_SCORE_DIFFERENCE  # the scores do depend on the window


@pytest.mark.parametrize("name", ["wav2vec2-group", "wav2vec2-layer", "trained-ast"])
def test_one_batch_of_windows_of_unequal_lengths_scores_each_as_if_alone(model_folder, name):
    classifier = LocalClassifier(str(model_folder(name)), "cpu", "float32", batch_size=8)
    windows = content_windows()
    alone = np.vstack([classifier.classify([window]) for window in windows])
    assert np.abs(classifier.classify(windows) - alone).max() < 1e-5


def test_a_model_without_a_mask_gets_batches_of_windows_of_one_length(tiny_model_folder, monkeypatch):
    classifier = LocalClassifier(str(tiny_model_folder("wav2vec2-group")), "cpu", "float32", batch_size=8)
    shapes = []
    forward = classifier._model.forward
    monkeypatch.setattr(classifier._model, "forward",
                        lambda **inputs: shapes.append(tuple(inputs["input_values"].shape)) or forward(**inputs))
    classifier.classify([noise(1, RATE, seed=1), tone(DOG_HZ, 0.5, RATE), noise(1, RATE, seed=2),
                         tone(MUSIC_HZ, 0.5, RATE), noise(0.7, RATE)])
    assert shapes == [(2, 16000), (2, 8000), (1, 11200)]


# --- what a window of the model hears ---------------------------------------------------------------------


def test_a_wav2vec2_window_longer_than_30_s_is_heard_for_its_first_30_s(tiny_model_folder):
    folder = tiny_model_folder("wav2vec2-group")
    classifier = LocalClassifier(str(folder), "cpu", "float32")
    assert classifier.model_input.heard_samples == UNLIMITED_MODEL_CAP_SAMPLES == 30 * RATE
    window = concat(noise(20, RATE, seed=1), tone(MUSIC_HZ, 10, RATE), tone(DOG_HZ, 5, RATE, 0.9))  # 35 s
    first_30_s = window[: 30 * RATE]
    scores = classifier.classify([window])
    assert np.abs(scores - pipeline_scores(folder, [first_30_s], "softmax")).max() < MAX_SCORE_DIFFERENCE
    assert np.abs(scores - pipeline_scores(folder, [window], "softmax")).max() > 100 * MAX_SCORE_DIFFERENCE


def test_a_window_shorter_than_one_frame_is_heard_with_silence_after_it(tiny_model_folder):
    """As the remote backend sends it: a 25 ms frame is the shortest input a model takes."""
    folder = tiny_model_folder("wav2vec2-group")  # its front end needs 345 samples
    short = tone(DOG_HZ, 0.01, RATE)  # 160 samples
    scores = LocalClassifier(str(folder), "cpu", "float32").classify([short])
    padded = np.pad(short, (0, 400 - len(short)))
    assert np.abs(scores - pipeline_scores(folder, [padded], "softmax")).max() < MAX_SCORE_DIFFERENCE


def test_windows_longer_than_the_speech_commands_model_hears_are_warned_about(project, run_block,
                                                                            tiny_model_folder):
    result = run_block("--model", str(tiny_model_folder("speech-commands")), "--win-size-ms", "2000", backend="local",
                       labels="yes\\nno")
    assert result.code == 0, result.out + result.err
    assert ("WARNING: --win-size-ms 2000 is longer than 1295 ms, the model's input; the model only hears the "
            "first 1.295 s of each window") in result.out


# --- the score function, end to end ------------------------------------------------------------------


@pytest.mark.parametrize("problem_type, args, labeled, score", [
    (None, (), {"bark"}, None),  # AST: sigmoid, Bark 0.5 passes 0.45; the fingerprint is as before
    ("single_label_classification", (), {"other"}, "softmax"),  # softmax: Bark 0.25
    ("single_label_classification", ("--score-function", "sigmoid"), {"bark"}, None),
], ids=["ast-sigmoid", "single-label-softmax", "asked-for-sigmoid"])
def test_scores_are_read_with_the_rules_function_end_to_end(project, run_block, tmp_path, problem_type, args,
                                                             labeled, score):
    folder = make_tiny_ast(tmp_path / "model", DOG_LOGITS, problem_type=problem_type)
    result = run_block("--model", str(folder), *args, backend="local", labels="Bark (bark, 0.45)")
    assert result.code == 0, result.out + result.err
    assert {segment["label"] for segment in project.state.labels_of(101)} == labeled
    assert json.loads(project.state.samples[101].metadata["ast_settings"]).get("score") == score


def test_a_wav2vec2_classifier_labels_with_softmax_scores(project, run_block, tiny_model_folder):
    result = run_block("--model", str(tiny_model_folder("wav2vec2-group")), backend="local",
                       labels="Speech\\nMusic\\nDog")
    assert result.code == 0, result.out + result.err
    assert "softmax scores" in result.out
    assert json.loads(project.state.samples[101].metadata["ast_settings"])["score"] == "softmax"


# --- models the block refuses before any sample is read -----------------------------------------------------


def edit_json(folder, name, **changes):
    path = folder / name
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def speech_recogniser(folder):
    make_tiny_ctc(folder)


def regression_head(folder):
    make_tiny_wav2vec2(folder, problem_type="regression")


def custom_code(folder, model_type):
    """A repository whose config maps the classifier to its own code, which marks that it ran."""
    make_tiny_wav2vec2(folder)
    (folder / "custom_model.py").write_text(f"open({str(folder / 'HUB_CODE_RAN')!r}, 'w').close()\n")
    edit_json(folder, "config.json", model_type=model_type, auto_map={
        "AutoConfig": "custom_model.CustomConfig", "AutoModelForAudioClassification": "custom_model.CustomModel"})


def stereo_extractor(folder):
    make_tiny_wav2vec2(folder)
    edit_json(folder, "preprocessor_config.json", feature_size=2)


def extractor_at_8_khz(folder):
    make_tiny_wav2vec2(folder)
    edit_json(folder, "preprocessor_config.json", sampling_rate=8000)


@pytest.mark.parametrize("build, args, message", [
    (speech_recogniser, (), "its config names Wav2Vec2ForCTC, which is not an audio classifier"),
    (regression_head, (), "its config says problem_type 'regression'"),
    (regression_head, ("--score-function", "softmax"), "its config says problem_type 'regression'"),
    (lambda folder: custom_code(folder, "custom-wav2vec2"), (), "trust_remote_code), which the block never runs"),
    (lambda folder: custom_code(folder, "wav2vec2"), (), "trust_remote_code), which the block never runs"),
    (stereo_extractor, (), "its feature extractor expects 2-channel audio"),
    (extractor_at_8_khz, (), "its feature extractor expects 8000 Hz audio"),
], ids=["speech-recogniser", "regression", "regression-with-a-score-function", "custom-code",
        "custom-code-of-a-known-type", "stereo", "8-khz"])
def test_a_model_the_block_cannot_run_stops_before_any_sample_is_read(project, run_block, tmp_path, capsys, build,
                                                                      args, message):
    folder = tmp_path / "model"
    build(folder)
    capsys.readouterr()  # the builder's own output
    result = run_block("--model", str(folder), *args, backend="local")
    assert result.code == 2, result.out + result.err
    assert result.err.startswith(f"ERROR: --model {folder}: ") and message in result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.out + result.err
    assert "Do you wish to run the custom code?" not in result.out  # transformers' prompt: never asked
    assert project.state.writes == [] and not [r for r in project.state.requests if "/raw-data/" in r.path]
    assert not (folder / "HUB_CODE_RAN").exists()
