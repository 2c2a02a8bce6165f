"""Audio handling: windows as views into the sample's 16 kHz audio."""

import numpy as np

from labeler.audio import window_audio
from labeler.timeline import Window


def test_window_audio_is_a_view_at_16k():
    audio = np.arange(32000, dtype=np.float32)
    piece = window_audio(audio, Window(44100, 88200), 44100)
    assert piece.base is audio and len(piece) == 16000 and piece[0] == 16000
