"""What the local model is fed: AST's fbank computed in batches with torch, or any other model's
own feature extractor; and which windows may share a batch without changing their scores.

May import: ``audio``. torch and transformers are imported only inside functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..audio import MODEL_FRAME_SAMPLES, MODEL_HOP_SAMPLES, MODEL_RATE_HZ, fbank_heard_samples

# AST input: Kaldi-style log-mel fbank, 25 ms frames every 10 ms, padded or cut to max_length frames.
FBANK_FRAME_LEN = MODEL_FRAME_SAMPLES
FBANK_HOP = MODEL_HOP_SAMPLES
FBANK_FFT = 512
FBANK_PREEMPHASIS = 0.97
FBANK_MEL_FLOOR = 1.192092955078125e-07


class TorchFbank:
    """ASTFeatureExtractor's features for a whole batch at once, with torch on the model's device.

    The reference extractor loops over frames in numpy (about 10 ms per window on a CPU); this
    computes the same values (same window, mel filters, pre-emphasis, padding and normalisation,
    and the extractor's own max_length, mean and std) as a few batched tensor ops, so features never
    bottleneck a GPU. Every window becomes max_length frames, so windows of any lengths share a batch.
    """

    equal_lengths_only = False

    def __init__(self, extractor, device, dtype=None):
        import torch

        self.max_frames = int(extractor.max_length)
        self.mean, self.std = float(extractor.mean), float(extractor.std)
        self.do_normalize = bool(getattr(extractor, "do_normalize", True))
        mel = getattr(extractor, "mel_filters", None)
        window = getattr(extractor, "window", None)
        if mel is None or window is None:  # torchaudio installed: the extractor keeps no tables
            from transformers.audio_utils import mel_filter_bank, window_function

            mel = mel_filter_bank(num_frequency_bins=FBANK_FFT // 2 + 1, num_mel_filters=extractor.num_mel_bins,
                                  min_frequency=20, max_frequency=extractor.sampling_rate // 2,
                                  sampling_rate=extractor.sampling_rate, norm=None, mel_scale="kaldi",
                                  triangularize_in_mel_space=True)
            window = window_function(FBANK_FRAME_LEN, "hann", periodic=False)
        self.mel = torch.as_tensor(mel, dtype=torch.float32, device=device)
        self.window = torch.as_tensor(window, dtype=torch.float32, device=device)
        self.device, self.dtype = device, dtype or torch.float32

    def max_samples(self) -> int:
        return fbank_heard_samples(self.max_frames)

    def model_inputs(self, windows: Sequence[np.ndarray]) -> dict:
        return {"input_values": self(windows).to(self.dtype)}

    def __call__(self, windows: Sequence[np.ndarray]):
        """(B, max_frames, mel bins) float32 features for 16 kHz mono windows of any lengths."""
        import torch

        limit = self.max_samples()
        lengths = [min(len(w), limit) for w in windows]
        width = max(max(lengths), FBANK_FRAME_LEN)
        audio = np.zeros((len(windows), width), dtype=np.float32)
        for row, (w, n) in enumerate(zip(windows, lengths)):
            audio[row, :n] = w[:n]
        frames = torch.from_numpy(audio).to(self.device).unfold(1, FBANK_FRAME_LEN, FBANK_HOP)
        frames = frames - frames.mean(dim=2, keepdim=True)
        frames = torch.cat([frames[..., :1] * (1 - FBANK_PREEMPHASIS),
                            frames[..., 1:] - FBANK_PREEMPHASIS * frames[..., :-1]], dim=2) * self.window
        power = torch.fft.rfft(frames, n=FBANK_FFT).abs().square()
        fbank = torch.clamp(power @ self.mel, min=FBANK_MEL_FLOOR).log()
        n_frames = torch.tensor([max(0, 1 + (n - FBANK_FRAME_LEN) // FBANK_HOP) for n in lengths], device=self.device)
        valid = torch.arange(fbank.shape[1], device=self.device)[None, :] < n_frames[:, None]
        fbank = fbank * valid[..., None]  # frames past a window's end are zero, as the extractor pads
        fbank = torch.nn.functional.pad(fbank, (0, 0, 0, max(0, self.max_frames - fbank.shape[1])))
        fbank = fbank[:, : self.max_frames]
        return (fbank - self.mean) / (2 * self.std) if self.do_normalize else fbank


class ExtractorFeatures:
    """Any other model's input from its own feature extractor (wav2vec2, HuBERT, WavLM, Whisper...),
    called on a whole batch the way transformers' pipeline calls it on one window.

    Each window is first cut at what the model hears (``heard_samples``: the block's 30 s cap for a
    model with no length limit), so one window of an hour never takes the machine's memory. Where
    the extractor returns an attention mask, windows are padded to the longest and masked. Where it
    does not, padding would be heard (group-norm wav2vec2 normalises and pools over it), so a batch
    must hold windows of one length only (``equal_lengths_only``).
    """

    def __init__(self, extractor, heard_samples: int, device, dtype):
        self.extractor, self.heard_samples = extractor, heard_samples
        self.masked = bool(getattr(extractor, "return_attention_mask", False))
        self.equal_lengths_only = not self.masked
        self.device, self.dtype = device, dtype

    def heard_length(self, window: np.ndarray) -> int:
        return max(min(len(window), self.heard_samples), MODEL_FRAME_SAMPLES)

    def model_inputs(self, windows: Sequence[np.ndarray]) -> dict:
        cut = [_at_least_one_frame(np.asarray(w[: self.heard_samples], dtype=np.float32)) for w in windows]
        # The extractor's own padding default stays where there is no mask (Whisper pads to 30 s itself).
        padding = {"padding": "longest", "return_attention_mask": True} if self.masked else \
            {"return_attention_mask": False}
        features = self.extractor(cut, sampling_rate=MODEL_RATE_HZ, return_tensors="pt", **padding)
        return dict(features.to(device=self.device, dtype=self.dtype))  # casts float tensors only


def _at_least_one_frame(window: np.ndarray) -> np.ndarray:
    """Silence after a window shorter than one 25 ms frame, as the remote backend sends it: the
    convolutional front ends of wav2vec2-style models need at least that much audio."""
    return np.pad(window, (0, MODEL_FRAME_SAMPLES - len(window))) if len(window) < MODEL_FRAME_SAMPLES else window


def batch_runs(windows: Sequence[np.ndarray], features) -> list[list[int]]:
    """Indices of windows that may share a batch: all of them, or those of one heard length each
    (in order of first appearance; the caller puts every row back in its window's place)."""
    if not features.equal_lengths_only:
        return [list(range(len(windows)))]
    runs: dict[int, list[int]] = {}
    for index, window in enumerate(windows):
        runs.setdefault(features.heard_length(window), []).append(index)
    return list(runs.values())
