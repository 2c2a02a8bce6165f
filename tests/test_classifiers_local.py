"""The local backend: AST loaded with transformers from tiny models the tests build and save."""

import json
import shutil

import numpy as np
import pytest
from transformers import ASTFeatureExtractor, BertConfig, BertForSequenceClassification

from audio import DOG_HZ, MUSIC_HZ, noise, silence, tone
from inference_emulator import LABELS
from tiny_models import SPEECH_COMMANDS_MEAN, SPEECH_COMMANDS_STD
from labeler.classifiers.features import TorchFbank
from labeler.classifiers.local import LocalClassifier, resolve_device_dtype
from labeler.core import ConfigError, InferenceError


def windows_of_mixed_lengths():
    return [tone(MUSIC_HZ, 1, 16000), noise(2, 16000, seed=3), silence(0.5, 16000), tone(DOG_HZ, 10.5, 16000),
            noise(0.03, 16000, seed=4), tone(MUSIC_HZ, 3.3, 16000, 0.1), noise(1, 16000, seed=5),
            tone(DOG_HZ, 0.7, 16000)]


@pytest.fixture
def model_of_kind(request, tiny_model_folder):
    """A random AST (its fbank computed by torch) or, by name, a tiny model run through its own extractor."""
    return lambda kind: str(request.getfixturevalue("random_model") if kind == "ast" else tiny_model_folder(kind))


@pytest.mark.parametrize("settings, frames", [
    ({}, 1024),  # the AudioSet AST
    ({"max_length": 128, "mean": SPEECH_COMMANDS_MEAN, "std": SPEECH_COMMANDS_STD}, 128),  # speech commands
])
def test_torch_features_match_the_reference_extractor(settings, frames):
    extractor = ASTFeatureExtractor(**settings)
    windows = windows_of_mixed_lengths()
    reference = extractor(windows, sampling_rate=16000, return_tensors="np")["input_values"]
    ours = TorchFbank(extractor, "cpu")(windows).numpy()
    assert ours.shape == reference.shape == (8, frames, 128)
    assert np.abs(ours - reference).max() < 1e-3


def test_window_shorter_than_one_frame_is_all_padding():
    extractor = ASTFeatureExtractor()
    features = TorchFbank(extractor, "cpu")([noise(0.01, 16000)]).numpy()
    assert np.allclose(features, (0 - extractor.mean) / (2 * extractor.std))


def test_model_labels_come_from_the_loaded_model(random_model):
    assert LocalClassifier(str(random_model), "cpu", "float32").class_names == LABELS


def test_scores_are_sigmoid_over_every_class(dog_model):
    scores = LocalClassifier(str(dog_model), "cpu", "float32").classify([tone(MUSIC_HZ, 1, 16000)] * 3)
    assert scores.shape == (3, len(LABELS))
    assert scores[0, LABELS.index("Dog")] == pytest.approx(0.7311, abs=1e-4)
    assert scores[0, LABELS.index("Bark")] == pytest.approx(0.5, abs=1e-4)


def test_scores_do_not_depend_on_the_batch_a_window_lands_in(random_model):
    windows = windows_of_mixed_lengths()
    one = LocalClassifier(str(random_model), "cpu", "float32", batch_size=1).classify(windows)
    eight = LocalClassifier(str(random_model), "cpu", "float32", batch_size=8).classify(windows)
    three = LocalClassifier(str(random_model), "cpu", "float32", batch_size=3).classify(windows[::-1])[::-1]
    assert np.abs(one - eight).max() < 1e-5 and np.abs(one - three).max() < 1e-5
    assert np.ptp(one, axis=0).max() > 1e-4  # the random model does tell the windows apart


@pytest.mark.parametrize("kind", ["ast", "wav2vec2-layer", "whisper"])
def test_bfloat16_agrees_with_float32(model_of_kind, kind):
    windows = windows_of_mixed_lengths()
    fp32 = LocalClassifier(model_of_kind(kind), "cpu", "float32").classify(windows)
    bf16 = LocalClassifier(model_of_kind(kind), "cpu", "bfloat16").classify(windows)
    assert np.abs(fp32 - bf16).max() < 0.02


def test_auto_device_is_cpu_without_a_gpu():
    device, dtype = resolve_device_dtype("auto", "float32")
    assert (device, dtype) == ("cpu", "float32")


def test_float16_on_cpu_is_rejected():
    with pytest.raises(ConfigError, match="--dtype float16 is for GPUs"):
        resolve_device_dtype("cpu", "float16")


def test_missing_model_folder(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        LocalClassifier(str(tmp_path / "nope"), "cpu", "float32")


def test_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ConfigError, match="cannot load it as an audio classifier"):
        LocalClassifier(str(tmp_path), "cpu", "float32")


def test_text_model_is_not_an_audio_classifier(tmp_path):
    BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=32, vocab_size=50)).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="--model .*: cannot load it as an audio classifier"):
        LocalClassifier(str(tmp_path), "cpu", "float32")


def test_hub_id_not_in_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE is set"):
        LocalClassifier("MIT/ast-finetuned-audioset-10-10-0.4593", "cpu", "float32")


# --- end to end with --backend local ------------------------------------------------------------


def test_local_backend_labels_the_project_in_apply_mode(project, run_block, dog_model):
    result = run_block("--model", str(dog_model), backend="local", labels="Speech\\nMusic\\nDog (doggo)")
    assert result.code == 0, result.out + result.err
    assert project.state.labels_of(101) == [{"startIndex": 0, "endIndex": 63999, "label": "doggo"}]
    assert project.state.labels_of(103) == [{"startIndex": 0, "endIndex": 7999, "label": "doggo"}]
    assert project.state.samples[101].metadata["ast_model"] == str(dog_model)


def test_local_backend_per_label_thresholds(project, run_block, dog_model):
    result = run_block("--model", str(dog_model), backend="local", labels="Dog (dog, 0.8)\\nBark (bark, 0.45)")
    assert result.code == 0
    assert {s["label"] for sid in (101, 102, 103) for s in project.state.labels_of(sid)} == {"bark"}


def test_local_backend_preview_mode(project, run_block, dog_model):
    result = run_block("--model", str(dog_model), "--propose-actions", "9", backend="local", labels="Dog")
    assert result.code == 0
    assert [w.kind for w in project.state.writes] == ["propose-changes"] * 3
    assert project.state.proposals[(9, 102)]["structuredLabels"] == [
        {"startIndex": 0, "endIndex": 63999, "label": "Dog"}]


def test_local_backend_validates_labels_against_the_loaded_model(project, run_block, dog_model):
    result = run_block("--model", str(dog_model), backend="local", labels="Speech\\nCat")
    assert result.code == 2 and "unknown label 'Cat'" in result.err
    assert project.state.writes == []


def test_many_short_samples_share_batches(studio, run_block, dog_model, monkeypatch):
    from labeler.classifiers.local import LocalClassifier
    from studio_emulator import EmuSample

    for i in range(20):
        studio.state.add(EmuSample(600 + i, f"s{i}.wav", 16000, [noise(0.5, 16000, seed=i)]))
    calls = []
    original = LocalClassifier.classify
    monkeypatch.setattr(LocalClassifier, "classify",
                        lambda self, windows: calls.append(len(windows)) or original(self, windows))
    # A partial group goes to inference after GROUP_WAIT_S without an arrival; on a loaded machine
    # a download can take that long, so widen it: this test is about filling batches, not timing.
    monkeypatch.setattr("labeler.pipeline.GROUP_WAIT_S", 30.0)
    result = run_block("--model", str(dog_model), "--batch-size", "8", backend="local", labels="Dog")
    assert result.code == 0
    assert calls == [1, 8, 8, 4]  # one warm-up window at load, then batches filled across samples


@pytest.mark.parametrize("model, message", [
    ("/no/such/model", "no such folder"),
    ("MIT/ast-finetuned-audioset-10-10-0.4593", "HF_HUB_OFFLINE is set"),
])
def test_unloadable_model_stops_before_touching_samples(project, run_block, tmp_path, monkeypatch, model, message):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    result = run_block("--model", model, backend="local")
    assert result.code == 2 and message in result.err and "Traceback" not in result.err
    assert project.state.writes == [] and not [r for r in project.state.requests if "/raw-data/" in r.path]


# --- out of memory, corrupt models, name ------------------------------------------------------------


def test_name_says_where_inference_runs(dog_model):
    assert LocalClassifier(str(dog_model), "cpu", "float32").name == f"the local model {dog_model} on cpu"


def cuda_oom():
    import torch

    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def cpu_oom():
    return RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                        "you tried to allocate 1073741824 bytes. Error code 12 (Cannot allocate memory)")


def limit_forward(monkeypatch, classifier, fails):
    """Make the model's forward raise ``fails(batch_size, call_number)`` when that returns an exception."""
    forward, calls = classifier._model.forward, []

    def tight_forward(*args, **kwargs):
        calls.append(kwargs["input_values"].shape[0])
        problem = fails(calls[-1], len(calls))
        if problem is not None:
            raise problem
        return forward(*args, **kwargs)

    monkeypatch.setattr(classifier._model, "forward", tight_forward)
    return calls


@pytest.mark.parametrize("kind", ["ast", "wav2vec2-layer"])
@pytest.mark.parametrize("oom", [cuda_oom, cpu_oom])
def test_out_of_memory_halves_the_batch_and_scores_stay_the_same(model_of_kind, monkeypatch, capsys, oom, kind):
    windows = windows_of_mixed_lengths() * 2
    expected = LocalClassifier(model_of_kind(kind), "cpu", "float32", batch_size=16).classify(windows)
    tight = LocalClassifier(model_of_kind(kind), "cpu", "float32", batch_size=16)
    capsys.readouterr()
    calls = limit_forward(monkeypatch, tight, lambda batch, _: oom() if batch > 3 else None)
    assert np.abs(tight.classify(windows) - expected).max() < 1e-5  # batch size moves only float rounding
    assert calls[:3] == [16, 8, 4] and set(calls[3:]) == {2} and tight.batch_size == 2
    assert capsys.readouterr().out.count("ran out of memory with batch 16; continuing with batch 2") == 1
    calls.clear()
    tight.classify(windows)
    assert set(calls) == {2}  # the smaller batch is kept: no more failed attempts
    assert "ran out of memory" not in capsys.readouterr().out


def test_window_that_runs_out_of_memory_alone_fails_with_the_rows_before_it(random_model, monkeypatch):
    windows = windows_of_mixed_lengths()
    expected = LocalClassifier(str(random_model), "cpu", "float32", batch_size=4).classify(windows)
    tight = LocalClassifier(str(random_model), "cpu", "float32", batch_size=4)
    limit_forward(monkeypatch, tight, lambda batch, call: cuda_oom() if call > 1 else None)  # only the first batch fits
    with pytest.raises(InferenceError, match="ran out of memory on a single window") as caught:
        tight.classify(windows)
    assert caught.value.failed == (4, 5, 6, 7)
    assert np.abs(caught.value.scores[:4] - expected[:4]).max() < 1e-5


def test_out_of_memory_alone_fails_the_windows_not_yet_scored_whatever_their_order(tiny_model_folder, monkeypatch):
    """Windows without a mask are batched by length, not in order: the failed ones are those not yet scored."""
    windows = [noise(1, 16000, seed=1), tone(DOG_HZ, 0.5, 16000), noise(1, 16000, seed=2), tone(MUSIC_HZ, 0.5, 16000)]
    model = str(tiny_model_folder("wav2vec2-group"))
    expected = LocalClassifier(model, "cpu", "float32", batch_size=4).classify(windows)
    tight = LocalClassifier(model, "cpu", "float32", batch_size=4)
    limit_forward(monkeypatch, tight, lambda batch, call: cuda_oom() if call > 1 else None)  # the 1 s pair fits
    with pytest.raises(InferenceError, match="ran out of memory on a single window") as caught:
        tight.classify(windows)
    assert caught.value.failed == (1, 3)
    assert np.abs(caught.value.scores[[0, 2]] - expected[[0, 2]]).max() < 1e-6


def test_other_model_errors_propagate(random_model, monkeypatch):
    classifier = LocalClassifier(str(random_model), "cpu", "float32", batch_size=4)
    limit_forward(monkeypatch, classifier, lambda batch, call: ValueError("weights are NaN"))
    with pytest.raises(ValueError, match="weights are NaN"):
        classifier.classify(windows_of_mixed_lengths())


def truncate_weights(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def edit_json(name, change):
    def edit(folder):
        path = folder / name
        path.write_text(change(path.read_text()))
    return edit


def drop_keys(*keys):
    def drop(text):
        config = json.loads(text)
        for key in keys:
            config.pop(key)
        return json.dumps(config)
    return drop


def set_key(key, value):
    return lambda text: json.dumps({**json.loads(text), key: value})


@pytest.mark.parametrize("corrupt, message", [
    (truncate_weights, "its weights file is damaged or incomplete"),
    (edit_json("config.json", lambda text: text[: len(text) // 2]), "is not a valid JSON file"),
    (edit_json("config.json", drop_keys("id2label", "label2id")), "its weights do not fit the shapes in its config"),
    (edit_json("config.json", drop_keys("hidden_size")), "its weights do not fit the shapes in its config"),
    (edit_json("config.json", set_key("hidden_size", "big")), "hidden_size"),
    (edit_json("preprocessor_config.json", set_key("num_mel_bins", 64)), "loaded, but fails on a test window"),
], ids=["truncated-weights", "config-not-json", "config-without-labels", "config-without-hidden-size",
        "config-with-a-bad-field", "extractor-does-not-fit-the-model"])
def test_corrupt_model_is_a_config_error(project, run_block, dog_model, tmp_path, corrupt, message):
    broken = tmp_path / "broken-model"
    shutil.copytree(dog_model, broken)
    corrupt(broken)
    result = run_block("--model", str(broken), backend="local")
    assert result.code == 2, result.out + result.err
    assert result.err.startswith(f"ERROR: --model {broken}: ") and message in result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.out + result.err
    assert project.state.writes == [] and not [r for r in project.state.requests if "/raw-data/" in r.path]


def test_weight_mismatch_report_stays_out_of_the_job_log(dog_model, tmp_path, capfd, caplog):
    broken = tmp_path / "broken-model"
    shutil.copytree(dog_model, broken)
    edit_json("config.json", drop_keys("id2label", "label2id"))(broken)
    with pytest.raises(ConfigError, match="its weights do not fit"):
        LocalClassifier(str(broken), "cpu", "float32")
    captured = capfd.readouterr()
    assert "MISMATCH" not in captured.out + captured.err + caplog.text  # transformers' table of mismatched tensors
