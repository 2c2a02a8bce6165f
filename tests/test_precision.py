"""``--dtype auto`` on a CPU: bf16 only where it measures faster. Timings and cpuinfo are injected, never real."""

import numpy as np
import pytest
import torch

import labeler.classifiers.precision as precision
from audio import MUSIC_HZ, noise, tone
from labeler.classifiers import BackendOptions, build_classifier
from labeler.classifiers import local
from labeler.classifiers.local import LocalClassifier
from labeler.classifiers.precision import choose_cpu_dtype
from tiny_models import make_tiny_ast

WITH_BF16 = "flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16\n"
WITHOUT_BF16 = "flags\t\t: fpu sse avx2 avx512f avx512_vnni avx_vnni\n"


def timings(fp32_ms: float, bf16_ms: float, calls: list | None = None):
    """A probe's stopwatch that reports fixed milliseconds per window and precision (and records the calls)."""
    def measure(dtype, windows):
        if calls is not None:
            calls.append((dtype, windows))
        return (fp32_ms if dtype == "float32" else bf16_ms) * windows / 1000
    return measure


def failing_measure(dtype, windows):
    raise AssertionError("the probe ran")


@pytest.fixture
def model(random_model):
    return LocalClassifier(str(random_model), "cpu", "float32")._model


def choose(model, measure, tmp_path, cpuinfo=WITH_BF16, batch=8, folder=None):
    return choose_cpu_dtype(model, batch, {}, cpuinfo=cpuinfo, measure=measure,
                            folder=str(folder or tmp_path / "verdicts"))


def test_auto_takes_fp32_when_bf16_measures_slower(model, tmp_path):
    verdict = choose(model, timings(fp32_ms=1.0, bf16_ms=1.6), tmp_path)
    assert verdict.dtype == "float32"
    assert verdict.describe().startswith("bf16 measured 0.62x fp32 on this CPU (probe ")
    assert verdict.describe().endswith(": float32")


def test_auto_takes_bf16_when_it_measures_1_15x_faster(model, tmp_path):
    verdict = choose(model, timings(fp32_ms=1.15, bf16_ms=1.0), tmp_path)
    assert (verdict.dtype, verdict.speedup) == ("bfloat16", pytest.approx(1.15))


def test_auto_keeps_fp32_just_below_the_threshold(model, tmp_path):
    assert choose(model, timings(fp32_ms=1.14, bf16_ms=1.0), tmp_path).dtype == "float32"


def test_probe_screens_one_window_then_warms_up_each_precision_then_interleaves_three_repeats(model, tmp_path):
    calls = []
    choose(model, timings(1.0, 0.5, calls), tmp_path)
    assert calls == [("float32", 1)] * 2 + [("bfloat16", 1)] * 2 + [("float32", 8), ("bfloat16", 8)] * 4


def test_probe_stops_after_one_windows_screen_when_bf16_runs_at_under_half_fp32s_speed(model, tmp_path):
    calls = []
    verdict = choose(model, timings(1.0, 2.1, calls), tmp_path)
    assert calls == [("float32", 1)] * 2 + [("bfloat16", 1)] * 2
    assert verdict.dtype == "float32" and "0.48x fp32 on this CPU (one window's screen, probe " in verdict.why


def test_probe_goes_on_when_bf16_screens_at_half_fp32s_speed(model, tmp_path):
    calls = []
    choose(model, timings(1.0, 2.0, calls), tmp_path)
    assert len(calls) == 12


def test_screen_keeps_the_faster_pass_so_a_slow_first_call_does_not_rule_bf16_out(model, tmp_path):
    bf16_screen = iter([0.005, 0.0005])  # the first bf16 call sets up its kernels

    def measure(dtype, windows):
        return 0.001 * windows if dtype == "float32" else next(bf16_screen) if windows == 1 else 0.0005 * windows
    assert choose(model, measure, tmp_path).dtype == "bfloat16"


def test_slow_cpu_times_as_many_windows_as_fit_the_budget(model, tmp_path):
    calls = []  # one window takes 0.5 s per precision: a warm-up and 3 repeats of both is 4 s a window
    verdict = choose(model, timings(500, 400, calls), tmp_path, batch=8)
    assert set(calls[4:]) == {("float32", 2), ("bfloat16", 2)}
    assert verdict.dtype == "bfloat16" and "(2 of 8 windows, probe " in verdict.why


def test_very_slow_cpu_still_times_one_window(model, tmp_path):
    calls = []
    choose(model, timings(5000, 4000, calls), tmp_path)
    assert set(calls[4:]) == {("float32", 1), ("bfloat16", 1)} and len(calls) == 12


def test_probe_compares_medians_so_one_slow_repeat_does_not_decide(tmp_path, model):
    bf16 = iter([0.5, 9.0, 0.5, 0.5])  # warm-up, then a repeat disturbed by another process, then two fast ones

    def measure(dtype, windows):
        return 0.001 * windows if dtype == "float32" else 0.0005 if windows == 1 else next(bf16) * 0.008
    assert choose(model, measure, tmp_path).dtype == "bfloat16"


def test_without_the_bf16_flag_there_is_no_probe(model, tmp_path):
    verdict = choose(model, failing_measure, tmp_path, cpuinfo=WITHOUT_BF16)
    assert verdict.describe() == "no bf16 in cpuinfo: float32"
    assert not (tmp_path / "verdicts").exists()


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_either_bf16_flag_lets_the_probe_run(model, tmp_path, flag):
    calls = []
    choose(model, timings(1.0, 0.5, calls), tmp_path, cpuinfo=f"flags : avx2 {flag}\n")
    assert calls


def test_second_run_uses_the_cached_verdict(model, tmp_path):
    first = choose(model, timings(fp32_ms=2.0, bf16_ms=1.0), tmp_path)
    second = choose(model, failing_measure, tmp_path)
    assert (first.dtype, second.dtype) == ("bfloat16", "bfloat16")
    assert second.describe() == "cached verdict, bf16 measured 2.00x fp32 on this CPU: bfloat16"


def test_another_batch_size_measures_again(model, tmp_path):
    choose(model, timings(2.0, 1.0), tmp_path, batch=8)
    calls = []
    assert choose(model, timings(1.0, 2.0, calls), tmp_path, batch=4).dtype == "float32"
    assert calls


def test_another_model_config_measures_again(random_model, tmp_path):
    choose(LocalClassifier(str(random_model), "cpu", "float32")._model, timings(2.0, 1.0), tmp_path)
    shorter = make_tiny_ast(tmp_path / "short-input", seed=1, max_length=128)  # same weight shapes, 8x fewer tokens
    calls = []
    choose(LocalClassifier(str(shorter), "cpu", "float32")._model, timings(1.0, 2.0, calls), tmp_path)
    assert calls


def test_models_with_one_config_share_a_verdict(random_model, dog_model, tmp_path):
    choose(LocalClassifier(str(random_model), "cpu", "float32")._model, timings(2.0, 1.0), tmp_path)
    # other weights, same shapes: the same speed
    assert choose(LocalClassifier(str(dog_model), "cpu", "float32")._model, failing_measure, tmp_path).dtype == \
        "bfloat16"


@pytest.mark.parametrize("change", [
    {"flags": frozenset({"avx512_bf16", "amx_bf16", "amx_tile"})}, {"threads": 4}, {"torch_version": "2.99.0"},
    {"config": {"hidden_size": 768, "num_hidden_layers": 11}}, {"batch_size": 16},
])
def test_cache_key_changes_with_what_decides_the_speed(change):
    base = dict(flags=frozenset({"avx512_bf16"}), threads=2, torch_version="2.9.0",
                config={"hidden_size": 768, "num_hidden_layers": 12}, batch_size=8)
    assert precision.cache_key(**{**base, **change}) != precision.cache_key(**base)


def test_cache_key_ignores_where_the_model_was_loaded_from():
    config = {"hidden_size": 768}
    assert precision.cache_key(frozenset(), 2, "2.9.0", {**config, "_name_or_path": "/a"}, 8) == \
        precision.cache_key(frozenset(), 2, "2.9.0", {**config, "_name_or_path": "/b"}, 8)


def test_missing_cache_folder_is_created(model, tmp_path):
    choose(model, timings(2.0, 1.0), tmp_path, folder=tmp_path / "new" / "deeper")
    assert len(list((tmp_path / "new" / "deeper").glob("*.json"))) == 1


def test_unwritable_cache_folder_means_measuring_again_not_an_error(model, tmp_path):
    (tmp_path / "a-file").write_text("")
    unwritable = tmp_path / "a-file" / "verdicts"  # below a file: no user, root included, can create it
    assert choose(model, timings(2.0, 1.0), tmp_path, folder=unwritable).dtype == "bfloat16"
    calls = []
    assert choose(model, timings(2.0, 1.0, calls), tmp_path, folder=unwritable).dtype == "bfloat16"
    assert calls


def test_damaged_cache_file_means_measuring_again(model, tmp_path):
    choose(model, timings(2.0, 1.0), tmp_path)
    (cached,) = (tmp_path / "verdicts").glob("*.json")
    cached.write_text('{"key": ')
    calls = []
    assert choose(model, timings(1.0, 2.0, calls), tmp_path).dtype == "float32" and calls


def test_probe_that_fails_gives_fp32_and_a_warning(model, tmp_path):
    def broken(dtype, windows):
        raise RuntimeError("bf16 kernel missing")
    verdict = choose(model, broken, tmp_path)
    assert verdict.dtype == "float32"
    assert "could not measure bf16 against fp32 on this CPU (RuntimeError: bf16 kernel missing)" in verdict.warning


def test_cache_folder_is_named_by_the_environment_variable(tmp_path):
    assert precision.cache_folder({"AST_LABELER_CACHE_DIR": str(tmp_path)}) == str(tmp_path / "precision")
    assert precision.cache_folder({"XDG_CACHE_HOME": "/xdg"}) == "/xdg/ast-audio-labeler/precision"


# --- through the local backend: only cpuinfo and the stopwatch are replaced ----------------------

@pytest.fixture
def cpu(monkeypatch):
    """``cpu(cpuinfo, fp32_ms, bf16_ms)``: this CPU's flags and what the probe will measure; returns the probe's
    calls as (layer shape, rows, batch)."""
    probed = []

    def set_cpu(cpuinfo, fp32_ms=1.0, bf16_ms=1.0):
        real_flags = precision.cpu_flags
        monkeypatch.setattr(precision, "cpu_flags", lambda text=None: real_flags(cpuinfo if text is None else text))
        # the flag check as it stood before the probe, told the same cpuinfo
        monkeypatch.setattr(local, "cpu_has_native_bf16", lambda: bool(real_flags(cpuinfo) & set(precision.BF16_FLAGS)))

        def fake_timer(layer, rows, batch):
            probed.append((tuple(layer.weight.shape), rows, batch))
            return timings(fp32_ms, bf16_ms)
        monkeypatch.setattr(precision, "layer_timer", fake_timer)
        return probed
    return set_cpu


def test_auto_on_a_cpu_where_bf16_is_faster_runs_as_explicit_bf16(random_model, cpu):
    cpu(WITH_BF16, fp32_ms=2.0, bf16_ms=1.0)
    windows = [tone(MUSIC_HZ, 1, 16000), noise(2, 16000, seed=3)]
    auto = LocalClassifier(str(random_model), "cpu", "auto")
    assert (auto.dtype_name, auto._model.dtype) == ("bfloat16", torch.bfloat16)
    explicit = LocalClassifier(str(random_model), "cpu", "bfloat16")
    assert np.array_equal(auto.classify(windows), explicit.classify(windows))


def test_auto_on_a_cpu_where_bf16_is_slower_stays_fp32(random_model, cpu):
    cpu(WITH_BF16, fp32_ms=1.0, bf16_ms=1.6)
    auto = LocalClassifier(str(random_model), "cpu", "auto")
    assert (auto.dtype_name, auto._model.dtype) == ("float32", torch.float32)


def test_probe_times_the_busiest_layer_on_the_runs_batch_and_sequence(random_model, cpu):
    probed = cpu(WITH_BF16)
    LocalClassifier(str(random_model), "cpu", "auto", batch_size=5)
    # the tiny AST's MLP (64x32 and 32x64) on 1214 tokens (12 x 101 patches + 2), not its 15x32 head on 1 row
    assert probed == [((64, 32), 1214, 5)]


def test_explicit_dtype_is_never_measured(random_model, cpu):
    probed = cpu(WITH_BF16, fp32_ms=2.0, bf16_ms=1.0)
    classifier = LocalClassifier(str(random_model), "cpu", "float32")
    assert (classifier.dtype_name, probed) == ("float32", [])


def test_loaded_line_says_what_was_measured_and_picked(random_model, cpu, capsys):
    cpu(WITH_BF16, fp32_ms=1.0, bf16_ms=1.6)
    build_classifier(BackendOptions("local", str(random_model), "cpu", "auto"), "Dog", {})
    assert "(bf16 measured 0.62x fp32 on this CPU (probe " in capsys.readouterr().out


def test_loaded_line_says_when_cpuinfo_decided(random_model, cpu, capsys):
    probed = cpu(WITHOUT_BF16)
    build_classifier(BackendOptions("local", str(random_model), "cpu", "auto"), "Dog", {})
    assert "(no bf16 in cpuinfo: float32, batch 8" in capsys.readouterr().out and probed == []


def test_probe_failure_in_the_backend_loads_fp32_and_warns(random_model, cpu, monkeypatch, capsys):
    cpu(WITH_BF16)
    monkeypatch.setattr(precision, "compare", lambda measure, batch: 1 / 0)  # any exception inside the probe
    classifier = LocalClassifier(str(random_model), "cpu", "auto")
    assert classifier.dtype_name == "float32"
    assert "WARNING: could not measure bf16 against fp32 on this CPU (ZeroDivisionError" in capsys.readouterr().out


def test_the_real_probe_measures_a_tiny_model(model, tmp_path, random_model):
    classifier = LocalClassifier(str(random_model), "cpu", "float32")
    with precision.rows_seen(classifier._model) as seen:
        classifier.classify([np.zeros(16000, dtype=np.float32)])
    verdict = choose_cpu_dtype(classifier._model, 2, seen, cpuinfo=WITH_BF16, folder=str(tmp_path))
    assert verdict.speedup > 0 and not verdict.warning
