"""Tiny audio classifiers the tests build and save like hub models (no download): ASTs of several
shapes and wav2vec2 classifiers of both normalisation kinds. Each is loaded through the block's own
loading code with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

from pathlib import Path

from inference_emulator import LABELS

# AST with 2 small layers: real AudioSet-style labels, any input length and patch stride.
TINY_AST = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_mel_bins=128)
# wav2vec2 with a 20x downsampling front end (the real one is 320x): fast, same code paths.
TINY_WAV2VEC2 = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                     num_conv_pos_embedding_groups=2, classifier_proj_size=16)
# The speech-commands AST's extractor statistics (its preprocessor_config.json).
SPEECH_COMMANDS_MEAN, SPEECH_COMMANDS_STD = -6.845978, 5.5654526


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
                       problem_type: str | None = None) -> Path:
    """A tiny wav2vec2 classifier: ``group`` norm without an attention mask (the base models), or
    ``layer`` norm with one (the large "stable layer norm" models), as their extractors say."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    config = Wav2Vec2Config(**TINY_WAV2VEC2, feat_extract_norm=norm, do_stable_layer_norm=norm == "layer",
                            problem_type=problem_type, **label_maps(labels))
    torch.manual_seed(seed)
    Wav2Vec2ForSequenceClassification(config).eval().save_pretrained(path)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=norm == "layer").save_pretrained(path)
    return path
