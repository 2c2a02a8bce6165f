"""Tiny audio classifiers the tests build and save like hub models (no download): ASTs of several
shapes, wav2vec2 classifiers of both normalisation kinds, a Whisper-encoder classifier, a
speech-recognition (CTC) model that is no classifier, and an AST trained in seconds on the
inference emulator's classes. Each is loaded through the block's own loading code with
HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, noise, silence, tone
from inference_emulator import LABELS, score_audio

# AST with 2 small layers: real AudioSet-style labels, any input length and patch stride.
TINY_AST = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_mel_bins=128)
# wav2vec2 with a 20x downsampling front end (the real one is 320x): fast, same code paths. Weights
# 10x the default spread, so its scores differ from window to window by ~0.2, not ~0.0005.
TINY_WAV2VEC2 = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                     num_conv_pos_embedding_groups=2, classifier_proj_size=16, initializer_range=0.2)
# A 320x front end like the real wav2vec2's: 30 s of audio is 1500 frames, so long windows are cheap.
WAV2VEC2_320X = dict(conv_dim=(16, 16, 16, 16), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 8, 4, 4))
# The speech-commands AST's extractor statistics (its preprocessor_config.json) and its 35 words.
SPEECH_COMMANDS_MEAN, SPEECH_COMMANDS_STD = -6.845978, 5.5654526
SPEECH_COMMANDS_LABELS = [
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go", "happy",
    "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven", "sheila", "six", "stop",
    "three", "tree", "two", "up", "visual", "wow", "yes", "zero",
]


def label_maps(labels) -> dict:
    return {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}


def make_tiny_ast(path: Path, logits=None, seed: int = 0, *, labels=LABELS, max_length: int = 1024,
                  stride: int = 10, problem_type: str | None = None, mean: float | None = None,
                  std: float | None = None) -> Path:
    """A tiny AST saved like a hub model; ``logits`` fixes the head's output (its weights are zeroed)."""
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    config = ASTConfig(**TINY_AST, max_length=max_length, frequency_stride=stride, time_stride=stride,
                       problem_type=problem_type, **label_maps(labels))
    torch.manual_seed(seed)
    model = ASTForAudioClassification(config).eval()
    if logits is not None:
        with torch.no_grad():
            model.classifier.dense.weight.zero_()
            model.classifier.dense.bias.copy_(torch.tensor(logits, dtype=torch.float32))
    model.save_pretrained(path)
    stats = {} if mean is None else {"mean": mean, "std": std}
    ASTFeatureExtractor(max_length=max_length, **stats).save_pretrained(path)
    return path


def make_tiny_wav2vec2(path: Path, norm: str = "group", seed: int = 0, *, labels=LABELS,
                       problem_type: str | None = None, front_end: dict | None = None) -> Path:
    """A tiny wav2vec2 classifier: ``group`` norm without an attention mask (the base models), or
    ``layer`` norm with one (the large "stable layer norm" models), as their extractors say.
    ``front_end`` replaces the convolutional front end's settings (e.g. ``WAV2VEC2_320X``)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    config = Wav2Vec2Config(**{**TINY_WAV2VEC2, **(front_end or {})}, feat_extract_norm=norm,
                            do_stable_layer_norm=norm == "layer", problem_type=problem_type, **label_maps(labels))
    torch.manual_seed(seed)
    Wav2Vec2ForSequenceClassification(config).eval().save_pretrained(path)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=norm == "layer").save_pretrained(path)
    return path


def make_tiny_whisper(path: Path, seed: int = 0, *, labels=LABELS) -> Path:
    """A tiny Whisper-encoder classifier: 80 mel bins over the 30 s its extractor pads every window to."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForAudioClassification

    config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80,
                           classifier_proj_size=16, init_std=0.2, **label_maps(labels))
    torch.manual_seed(seed)
    WhisperForAudioClassification(config).eval().save_pretrained(path)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    return path


def make_tiny_ctc(path: Path) -> Path:
    """A tiny wav2vec2 speech recogniser (CTC head): transformers would load it as a classifier
    with a random head, so the block must refuse it."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    settings = {k: v for k, v in TINY_WAV2VEC2.items() if k != "classifier_proj_size"}
    Wav2Vec2ForCTC(Wav2Vec2Config(**settings, vocab_size=12)).eval().save_pretrained(path)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000).save_pretrained(path)
    return path


# The shapes the block must run as transformers does, built on demand (conftest's ``tiny_model``).
TINY_MODELS = {
    # MIT/ast-finetuned-speech-commands-v2's shape: 1.28 s, 35 words, its extractor statistics
    "speech-commands": lambda path: make_tiny_ast(path, labels=SPEECH_COMMANDS_LABELS, max_length=128,
                                                  problem_type="single_label_classification",
                                                  mean=SPEECH_COMMANDS_MEAN, std=SPEECH_COMMANDS_STD),
    "speech-commands-unset": lambda path: make_tiny_ast(path, labels=SPEECH_COMMANDS_LABELS, max_length=128,
                                                        mean=SPEECH_COMMANDS_MEAN, std=SPEECH_COMMANDS_STD),
    "audioset-stride-12": lambda path: make_tiny_ast(path, stride=12),  # MIT/ast-finetuned-audioset-12-12-0.447
    # 320x front ends: a window of 10 s is 500 frames, 30 s 1500 (a 20x one makes 30 s take gigabytes)
    "wav2vec2-group": lambda path: make_tiny_wav2vec2(path, "group", front_end=WAV2VEC2_320X),
    "wav2vec2-layer": lambda path: make_tiny_wav2vec2(path, "layer", front_end=WAV2VEC2_320X),
    "whisper": make_tiny_whisper,
}


# --- an AST trained on the inference emulator's classes ------------------------------------------

# It hears 1.015 s (100 fbank frames) through 16x16 patches: 48 patches, so training takes seconds.
TRAINED_AST_FRAMES, TRAINED_AST_STRIDE = 100, 16
TRAINED_AST_WINDOWS, TRAINED_AST_EPOCHS, TRAINED_AST_BATCH, TRAINED_AST_LR = 300, 25, 32, 1e-2
TRAINED_AST_EVAL_WINDOWS = 40
CLASS_TONES_HZ = (MUSIC_HZ, SPEECH_HZ, DOG_HZ)


class TrainedModel(NamedTuple):
    path: Path
    windows: list  # evaluation windows, never trained on: tones, noise and near-silence of 0.2-1.2 s
    labels: list[str]  # each window's best class by the emulator's scores


def synthetic_window(rng: np.random.Generator) -> np.ndarray:
    """One window of an emulator class: near-silence, broadband noise, or a 440 Hz, 1 kHz or 3 kHz
    tone, 0.2-1.2 s long in 100 ms steps (every tone a whole number of cycles, so none leaks into
    noise-like flatness) at a random level."""
    kind, seconds, level = int(rng.integers(5)), int(rng.integers(2, 13)) / 10, float(rng.uniform(0.1, 0.8))
    if kind == 0:
        return silence(seconds, 16000) + rng.normal(0, 0.002, round(seconds * 16000)).astype(np.float32)
    if kind == 1:
        return noise(seconds, 16000, seed=int(rng.integers(2**31)), amplitude=level)
    return tone(CLASS_TONES_HZ[kind - 2], seconds, 16000, level)


def make_trained_ast(path: Path, seed: int = 0) -> TrainedModel:
    """A tiny AST trained (seconds on one CPU core) to give the inference emulator's scores
    (``score_audio``, sigmoid, BCE loss as AST trains) for its classes, with held-out windows."""
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    from labeler.classifiers.features import TorchFbank

    extractor = ASTFeatureExtractor(max_length=TRAINED_AST_FRAMES)
    rng = np.random.default_rng(seed)
    train = [synthetic_window(rng) for _ in range(TRAINED_AST_WINDOWS)]
    evaluation = [synthetic_window(rng) for _ in range(TRAINED_AST_EVAL_WINDOWS)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest on a shared machine, and deterministic
    try:
        torch.manual_seed(seed)
        features = TorchFbank(extractor, "cpu")(train)
        targets = torch.tensor([list(score_audio(w, 16000).values()) for w in train])
        config = ASTConfig(**TINY_AST, max_length=TRAINED_AST_FRAMES, frequency_stride=TRAINED_AST_STRIDE,
                           time_stride=TRAINED_AST_STRIDE, **label_maps(LABELS))
        model = ASTForAudioClassification(config)
        _train(model, features, targets)
    finally:
        torch.set_num_threads(threads)
    model.eval().save_pretrained(path)
    extractor.save_pretrained(path)
    best = [max(scores, key=scores.get) for scores in (score_audio(w, 16000) for w in evaluation)]
    return TrainedModel(path, evaluation, best)


def _train(model, features, targets) -> None:
    import torch

    optimiser = torch.optim.AdamW(model.parameters(), lr=TRAINED_AST_LR)
    steps_per_epoch = -(-len(features) // TRAINED_AST_BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=TRAINED_AST_LR,
                                                   total_steps=TRAINED_AST_EPOCHS * steps_per_epoch)
    model.train()
    for _ in range(TRAINED_AST_EPOCHS):
        order = torch.randperm(len(features))
        for start in range(0, len(features), TRAINED_AST_BATCH):
            batch = order[start : start + TRAINED_AST_BATCH]
            logits = model(input_values=features[batch]).logits
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
