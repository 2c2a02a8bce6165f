"""The remote backend with the model's own files: config.json decides the score function and the
labels, preprocessor_config.json how much of a window is uploaded; the inference emulator serves
real (tiny) transformers models through the audio-classification pipeline, as an endpoint does."""

import io
import json
import socket

import numpy as np
import pytest
import soundfile

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, noise, silence, tone
from capture_server import CaptureServer
from conftest import HF_TOKEN
from inference_emulator import AST_EXTRACTOR, MODEL_ID, InferenceEmulator
from labeler.audio import encode_audio_16k
from labeler.classifiers import BackendOptions, build_classifier
from labeler.models import UNLIMITED_MODEL_CAP_S
from studio_emulator import EmuSample
from tiny_models import SPEECH_COMMANDS_MEAN, SPEECH_COMMANDS_STD, make_tiny_ast, make_tiny_wav2vec2

SPEECH_COMMANDS = ("backward bed bird cat dog down eight five follow forward four go happy house learn left marvin "
                   "nine no off on one right seven sheila six stop three tree two up visual wow yes zero").split()
SPEECH_COMMANDS_HEARD_S = (400 + 127 * 160) / 16000  # 128 frames of 10 ms, the last one 25 ms long
TOLERANCE = 1e-4
# Windows the block would send: unlike lengths and content, so a score taken from the wrong window shows.
WINDOWS = [tone(SPEECH_HZ, 2, 16000), noise(1.5, 16000), concat(silence(1, 16000), tone(MUSIC_HZ, 1, 16000)),
           tone(DOG_HZ, 0.7, 16000)]


def sharpen_head(path, factor: float = 50.0) -> None:
    """A random wav2vec2 head gives every class about the same score for any audio; scaled logits let
    the audio show in the scores (rows of different windows differ far beyond the tolerance)."""
    import torch
    from transformers import AutoModelForAudioClassification

    model = AutoModelForAudioClassification.from_pretrained(path)
    with torch.no_grad():
        model.classifier.weight.mul_(factor)
    model.save_pretrained(path)


def build(kind: str, path):
    sc = dict(labels=SPEECH_COMMANDS, max_length=128, mean=SPEECH_COMMANDS_MEAN, std=SPEECH_COMMANDS_STD)
    if kind == "speech-commands AST, single-label":
        return make_tiny_ast(path, problem_type="single_label_classification", **sc)
    if kind == "speech-commands AST, problem_type unset":
        return make_tiny_ast(path, **sc)
    if kind == "AudioSet AST, stride 12":
        return make_tiny_ast(path, stride=12)
    make_tiny_wav2vec2(path, "group" if kind == "wav2vec2, group norm" else "layer")
    sharpen_head(path)
    return path


# The function_to_apply the auto rule picks: problem_type when set, else sigmoid for AST, softmax otherwise.
MODELS = {
    "speech-commands AST, single-label": "softmax",
    "speech-commands AST, problem_type unset": "sigmoid",
    "AudioSet AST, stride 12": "sigmoid",
    "wav2vec2, group norm": "softmax",
    "wav2vec2, layer norm": "softmax",
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return {kind: build(kind, tmp_path_factory.mktemp("model")) for kind in MODELS}


def served(model_dir, model_id="test/served-model") -> InferenceEmulator:
    return InferenceEmulator(HF_TOKEN, model_dir=model_dir, model_id=model_id)


def remote_classifier(emulator: InferenceEmulator, labels: str):
    options = BackendOptions("remote", emulator.state.model_id, inference_url=emulator.url, concurrency=4,
                             max_wait_s=30.0)
    classifier, _ = build_classifier(options, labels, {"HF_TOKEN": HF_TOKEN, "HF_ENDPOINT": emulator.hub})
    return classifier


def on_the_wire(window: np.ndarray) -> np.ndarray:
    """The window as the endpoint decodes it: 16-bit FLAC."""
    audio, _ = soundfile.read(io.BytesIO(encode_audio_16k(window)), dtype="float32")
    return audio


def reference_scores(model_dir, windows, function_to_apply: str, class_names) -> np.ndarray:
    """transformers' own pipeline, one window at a time, every label."""
    from transformers import pipeline

    pipe = pipeline("audio-classification", model=str(model_dir), device="cpu")
    rows = []
    for window in windows:
        answer = pipe({"raw": on_the_wire(window), "sampling_rate": 16000}, top_k=None,
                      function_to_apply=function_to_apply)
        scores = {item["label"]: item["score"] for item in answer}
        rows.append([scores[name] for name in class_names])
    return np.array(rows)


@pytest.mark.parametrize("kind", list(MODELS))
def test_remote_scores_equal_the_pipeline_with_the_score_function_the_rule_picks(model_dirs, kind):
    with served(model_dirs[kind]) as emulator:
        classifier = remote_classifier(emulator, "dog" if "speech-commands" in kind else "Dog")
        try:
            scores = classifier.classify(WINDOWS)
        finally:
            classifier.close()
        params = {(r["params"]["function_to_apply"], r["params"]["top_k"]) for r in emulator.state.requests}
    expected = MODELS[kind]
    assert classifier.score_function == expected
    assert params == {(expected, len(classifier.class_names))}
    reference = reference_scores(model_dirs[kind], WINDOWS, expected, classifier.class_names)
    assert np.abs(scores - reference).max() <= TOLERANCE
    assert np.abs(np.diff(reference, axis=0)).max() > 10 * TOLERANCE  # the audio shows in the scores


def test_speech_commands_model_uploads_only_its_input_and_warns_about_longer_windows(
        model_dirs, studio, run_block):
    studio.state.add(EmuSample(401, "keyword.wav", 16000, [tone(SPEECH_HZ, 4, 16000)]))
    with served(model_dirs["speech-commands AST, single-label"]) as emulator:
        result = run_block("--model", "test/served-model", "--inference-url", emulator.url, "--win-size-ms", "2000",
                           env={"HF_ENDPOINT": emulator.hub}, labels="yes\\nno")
        uploads = {r["seconds"] for r in emulator.state.requests[1:]}  # after the 0.1 s test request
    assert result.code == 0, result.out + result.err
    assert (f"WARNING: --win-size-ms 2000 is longer than {SPEECH_COMMANDS_HEARD_S * 1000:g} ms, the model's input; "
            f"the model only hears the first {SPEECH_COMMANDS_HEARD_S:g} s of each window") in result.out
    assert uploads == {SPEECH_COMMANDS_HEARD_S}
    assert f"(35 classes, softmax scores, up to {SPEECH_COMMANDS_HEARD_S:g} s of each window uploaded)" in result.out


def test_a_model_folder_is_read_for_its_extractor_too(hf, tmp_path):
    from labeler.classifiers.remote import fetch_model_files

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["ASTForAudioClassification"],
                                                    "id2label": {"0": "Speech", "1": "Dog"}}))
    (folder / "preprocessor_config.json").write_text(json.dumps({**AST_EXTRACTOR, "max_length": 128}))
    files = fetch_model_files(str(folder), hf.hub, HF_TOKEN)
    assert files.extractor["max_length"] == 128 and files.config["id2label"]["1"] == "Dog"
    assert hf.state.requests == []


# --- what the hub's files decide, with the content-scoring emulator ----------------------------------------


def long_samples(studio) -> None:
    studio.state.add(EmuSample(501, "twelve.wav", 16000, [tone(DOG_HZ, 12, 16000)]))
    studio.state.add(EmuSample(502, "forty.wav", 16000, [tone(MUSIC_HZ, 40, 16000)]))


def test_unreadable_extractor_cuts_uploads_only_at_the_cap_and_says_so_once(studio, hf, run_block):
    hf.state.serve_preprocessor = False
    long_samples(studio)
    result = run_block("--win-size-ms", "0")
    assert result.code == 0, result.out + result.err
    warnings = [line for line in result.out.splitlines() if "preprocessor_config.json" in line]
    assert warnings == [f"WARNING: could not read the feature extractor settings of {MODEL_ID} "
                        "(preprocessor_config.json: HTTP 404); windows are uploaded whole up to the block's "
                        f"{UNLIMITED_MODEL_CAP_S:g} s cap, however much of them the model hears"]
    assert sorted(r["seconds"] for r in hf.state.requests[1:]) == [12.0, UNLIMITED_MODEL_CAP_S]


def test_extractor_with_a_length_that_is_no_number_counts_as_unreadable(project, hf, run_block):
    hf.state.preprocessor_update = {"max_length": "long"}
    result = run_block()
    assert result.code == 0, result.out + result.err
    assert (f"could not read the feature extractor settings of {MODEL_ID} (preprocessor_config.json: ValueError "
            "in its values); windows are uploaded whole up to the block's 30 s cap") in result.out


def test_readable_extractor_cuts_uploads_at_the_models_input(studio, hf, run_block):
    hf.state.preprocessor_update = {"max_length": 512}  # 5.12 s: the hub's file decides, not a constant
    long_samples(studio)
    result = run_block("--win-size-ms", "0")
    assert result.code == 0, result.out + result.err
    assert {r["seconds"] for r in hf.state.requests[1:]} == {(400 + 511 * 160) / 16000}
    assert "preprocessor_config.json" not in result.out


def test_unreadable_config_means_sigmoid_with_a_warning_naming_the_flag(project, hf, run_block):
    hf.state.serve_config = False
    result = run_block()
    assert result.code == 0, result.out + result.err
    assert (f"WARNING: could not read the config of {MODEL_ID} (HTTP 404), so --score-function auto cannot tell "
            "how its head was trained and asks for sigmoid scores; set --score-function softmax for a single-label "
            "model") in result.out
    assert {r["params"]["function_to_apply"] for r in hf.state.requests} == {"sigmoid"}


def test_unreadable_config_with_a_chosen_score_function_gives_no_warning(project, hf, run_block):
    hf.state.serve_config = False
    result = run_block("--score-function", "softmax")
    assert result.code == 0, result.out + result.err
    assert "--score-function" not in result.out
    assert {r["params"]["function_to_apply"] for r in hf.state.requests} == {"softmax"}


def test_config_of_another_architecture_asks_for_softmax(project, hf, run_block):
    hf.state.config_update = {"architectures": ["HubertForSequenceClassification"]}
    result = run_block()
    assert result.code == 0, result.out + result.err
    assert {r["params"]["function_to_apply"] for r in hf.state.requests} == {"softmax"}


def closed_port_url() -> str:
    with socket.socket() as probe:  # a port nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_unreachable_hub_falls_back_to_learned_labels_sigmoid_and_the_cap(project, hf, run_block):
    result = run_block(env={"HF_ENDPOINT": closed_port_url()})
    assert result.code == 0, result.out + result.err
    for unreadable in ("the config of", "the feature extractor settings of", "the label list of"):
        assert f"WARNING: could not read {unreadable} {MODEL_ID} (" in result.out
    assert result.out.count("hub unreachable (ConnectionError)") == 3
    assert {r["params"]["function_to_apply"] for r in hf.state.requests} == {"sigmoid"}


def test_an_unreachable_hub_is_tried_once_not_once_per_file(monkeypatch):
    import requests

    from labeler.classifiers.remote import fetch_model_files

    tried = []
    real_get = requests.Session.get
    monkeypatch.setattr(requests.Session, "get", lambda self, url, **kw: tried.append(url) or real_get(self, url, **kw))
    files = fetch_model_files(MODEL_ID, closed_port_url(), HF_TOKEN)  # each try could wait 10 s to connect
    assert len(tried) == 1 and files.config is None and files.extractor is None
    assert files.extractor_problem == files.config_problem == "hub unreachable (ConnectionError)"


def assert_refused_before_anything(result, studio, hf, *fragments: str) -> None:
    assert result.code == 2, result.out + result.err
    errors = [line for line in result.err.splitlines() if line.strip()]
    assert len(errors) == 1 and "Traceback" not in result.err, result.err
    assert all(fragment in errors[0] for fragment in fragments), errors[0]
    assert studio.state.requests == [] and hf.state.requests == []


def test_regression_model_exits_2_before_studio_or_the_endpoint(project, hf, run_block):
    hf.state.config_update = {"problem_type": "regression"}
    result = run_block()
    assert_refused_before_anything(result, project, hf, f"--model {MODEL_ID}", "problem_type 'regression'",
                                   "choose an audio classification model")


def test_model_for_another_sampling_rate_exits_2_before_studio_or_the_endpoint(project, hf, run_block):
    hf.state.preprocessor_update = {"sampling_rate": 8000}
    result = run_block()
    assert_refused_before_anything(result, project, hf, f"--model {MODEL_ID}", "expects 8000 Hz audio",
                                   "choose a 16 kHz model")


def test_hub_token_is_dropped_when_the_extractor_redirects_to_another_host(studio, hf, run_block):
    studio.state.add(EmuSample(601, "long.wav", 16000, [tone(DOG_HZ, 8, 16000)]))
    extractor = json.dumps({**AST_EXTRACTOR, "max_length": 128}).encode()
    with CaptureServer(extractor, "application/json") as cdn:
        hf.state.preprocessor_redirect_to = f"{cdn.url}/preprocessor_config.json"
        result = run_block("--win-size-ms", "0")
        assert cdn.requests and not cdn.saw_header("Authorization")
    assert result.code == 0, result.out + result.err
    assert {r["seconds"] for r in hf.state.requests[1:]} == {SPEECH_COMMANDS_HEARD_S}  # the file was read
