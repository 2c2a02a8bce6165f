"""--dtype int8: the model converted once with ONNX Runtime (export, dynamic int8 quantization), stored
by its weights, and run on the same batched features as torch; where it may run and where it is ignored."""

import shutil

import numpy as np
import pytest

from audio import DOG_HZ, MUSIC_HZ, noise, tone
from labeler.classifiers import int8
from labeler.classifiers.local import LocalClassifier, resolve_device_dtype
from labeler.core import ConfigError
from tiny_models import make_tiny_ast

# Targets of issue 20 on the trained test AST (weights that respond to the audio).
MAX_SCORE_DIFFERENCE = 0.05
EQUAL_LABEL_SHARE = 0.98
THRESHOLD = 0.2


@pytest.fixture(autouse=True)
def cache_folder(tmp_path, monkeypatch):
    """Converted models that cannot go beside the model land here, never in the developer's cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(int8.CACHE_ENV, str(folder))
    return folder / "int8"


def copy_of(model, tmp_path, name="model"):
    """A private copy of a session model, so converted models stored beside it start from none."""
    return shutil.copytree(model, tmp_path / name)


def some_windows():
    return [tone(MUSIC_HZ, 1, 16000), noise(2, 16000, seed=3), tone(DOG_HZ, 0.7, 16000), noise(0.5, 16000, seed=4)]


def stored_models(folder):
    return sorted(p.name for p in folder.glob("*.onnx")) if folder.is_dir() else []


# --- converts, loads, labels -----------------------------------------------------------------------


def test_int8_agrees_with_float32_on_the_trained_ast(trained_ast, tmp_path):
    model = str(copy_of(trained_ast.path, tmp_path))
    fp32 = LocalClassifier(model, "cpu", "float32").classify(trained_ast.windows)
    quantized = LocalClassifier(model, "cpu", "int8").classify(trained_ast.windows)
    assert np.abs(fp32 - quantized).max() <= MAX_SCORE_DIFFERENCE
    assert np.ptp(fp32, axis=0).max() > 0.5  # the trained model's scores do depend on the audio

    def labels(scores):  # the block's per-window rule: the best class over the threshold, else none
        return [int(row.argmax()) if row.max() >= THRESHOLD else -1 for row in scores]

    equal = np.mean([a == b for a, b in zip(labels(fp32), labels(quantized))])
    assert equal >= EQUAL_LABEL_SHARE


def test_int8_runs_a_wav2vec2_batched_by_length(tiny_model_folder, tmp_path):
    model = str(copy_of(tiny_model_folder("wav2vec2-group"), tmp_path))
    windows = some_windows()
    fp32 = LocalClassifier(model, "cpu", "float32").classify(windows)
    quantized = LocalClassifier(model, "cpu", "int8").classify(windows)
    assert np.abs(fp32 - quantized).max() < 0.05
    assert np.ptp(fp32, axis=0).max() > 0.05  # its windows score differently, so agreement means something


def test_block_labels_the_project_with_int8(project, run_block, dog_model, tmp_path):
    model = copy_of(dog_model, tmp_path)
    result = run_block("--model", str(model), "--dtype", "int8", backend="local",
                       labels="Speech\\nMusic\\nDog (doggo)")
    assert result.code == 0, result.out + result.err
    assert "(int8, batch 8" in result.out
    assert project.state.labels_of(101) == [{"startIndex": 0, "endIndex": 63999, "label": "doggo"}]


def test_conversion_command_stores_the_model_beside_it(random_model, tmp_path, capsys):
    model = copy_of(random_model, tmp_path)
    assert int8.main([str(model)]) == 0
    assert len(stored_models(model / "int8")) == 1
    assert "int8 model of" in capsys.readouterr().out


def test_conversion_command_names_a_missing_model(tmp_path, capsys):
    assert int8.main([str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().out


# --- the converted model is stored by its weights -----------------------------------------------------


def test_second_load_reuses_the_converted_model(random_model, tmp_path, monkeypatch):
    model = str(copy_of(random_model, tmp_path))
    LocalClassifier(model, "cpu", "int8")
    monkeypatch.setattr(int8, "_export", lambda *args: pytest.fail("converted again"))
    again = LocalClassifier(model, "cpu", "int8")
    assert again.classify(some_windows()).shape == (4, len(again.class_names))


def test_different_weights_of_one_config_get_their_own_converted_model(tmp_path):
    first, second = make_tiny_ast(tmp_path / "first", seed=1), make_tiny_ast(tmp_path / "second", seed=2)
    LocalClassifier(str(first), "cpu", "int8")
    shutil.copytree(first / "int8", second / "int8")  # the first one's conversion, where the second would look
    LocalClassifier(str(second), "cpu", "int8")
    assert len(stored_models(second / "int8")) == 2


def test_read_only_model_folder_stores_in_the_cache_folder(random_model, tmp_path, cache_folder):
    model = copy_of(random_model, tmp_path)
    (model / "int8").write_text("")  # a file where the folder would go: nothing can be written there
    LocalClassifier(str(model), "cpu", "int8")
    assert len(stored_models(cache_folder)) == 1
    LocalClassifier(str(model), "cpu", "int8")  # found there on the next run
    assert len(stored_models(cache_folder)) == 1


def test_model_that_cannot_be_exported_is_a_config_error(random_model, tmp_path, monkeypatch):
    def broken_export(*args, **kwargs):
        raise RuntimeError("Unsupported: ONNX export of operator foo")

    monkeypatch.setattr("torch.onnx.export", broken_export)
    with pytest.raises(ConfigError, match="--dtype int8 cannot convert it .ONNX export failed: Unsupported: ONNX "
                                          "export of operator foo.; use --dtype float32"):
        LocalClassifier(str(copy_of(random_model, tmp_path)), "cpu", "int8")


# --- out of memory ------------------------------------------------------------------------------


def ort_oom():
    from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

    return RuntimeException("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running "
                            "MatMul node. Status Message: bfc_arena.cc:376 Failed to allocate memory for requested "
                            "buffer of size 1073741824")


def test_out_of_memory_in_onnx_runtime_halves_the_batch(random_model, tmp_path, monkeypatch, capsys):
    model = str(copy_of(random_model, tmp_path))
    windows = some_windows() * 2
    expected = LocalClassifier(model, "cpu", "int8", batch_size=8).classify(windows)
    tight = LocalClassifier(model, "cpu", "int8", batch_size=8)
    run, calls = tight._int8.logits, []

    def tight_logits(inputs):
        calls.append(inputs["input_values"].shape[0])
        if calls[-1] > 2:
            raise ort_oom()
        return run(inputs)

    monkeypatch.setattr(tight._int8, "logits", tight_logits)
    capsys.readouterr()
    assert np.abs(tight.classify(windows) - expected).max() < 1e-5
    assert calls[:3] == [8, 4, 2] and tight.batch_size == 2
    assert "ran out of memory with batch 8; continuing with batch 2" in capsys.readouterr().out


def test_other_onnx_runtime_errors_propagate(random_model, tmp_path, monkeypatch):
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    classifier = LocalClassifier(str(copy_of(random_model, tmp_path)), "cpu", "int8")
    monkeypatch.setattr(classifier._int8, "logits", lambda inputs: (_ for _ in ()).throw(InvalidArgument("bad rank")))
    with pytest.raises(InvalidArgument):
        classifier.classify(some_windows())


# --- where int8 may run ------------------------------------------------------------------------------


def test_int8_with_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="--dtype int8 runs on the CPU only; use --device cpu"):
        resolve_device_dtype("cuda", "int8")


def test_int8_with_auto_device_runs_on_the_cpu_even_with_a_gpu(monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert resolve_device_dtype("auto", "int8") == ("cpu", "int8")
    assert "--dtype int8 runs on the CPU, though a CUDA GPU is present" in capsys.readouterr().out


def test_auto_never_picks_int8(random_model):
    from labeler.classifiers.local import LocalClassifier

    assert resolve_device_dtype("cpu", "auto") == ("cpu", "auto")  # left to the measured choice on a CPU
    assert LocalClassifier(str(random_model), "cpu", "auto", threads=1).dtype_name in ("float32", "bfloat16")


def test_remote_backend_warns_about_int8_and_runs(project, run_block):
    result = run_block("--dtype", "int8")
    assert result.code == 0, result.out + result.err
    assert result.out.count("WARNING: --dtype int8 applies to --backend local only") == 1


@pytest.mark.parametrize("kind", ["ast", "wav2vec2-layer"])
def test_int8_scores_do_not_depend_on_the_batch_a_window_lands_in(kind, random_model, tiny_model_folder, tmp_path):
    """Dynamic quantization scales activations per input tensor: each window runs alone, cut at its mask."""
    model = str(copy_of(random_model if kind == "ast" else tiny_model_folder(kind), tmp_path))
    windows = some_windows()
    one = LocalClassifier(model, "cpu", "int8", batch_size=1).classify(windows)
    four = LocalClassifier(model, "cpu", "int8", batch_size=4).classify(windows)
    assert np.abs(one - four).max() < 1e-6
