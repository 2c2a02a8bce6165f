"""The server's options as a Serve config file's ``args`` give them (untyped): each bad one named,
with its value and what is allowed (serve/options.py). No Ray here."""

import pytest

from labeler.core import ConfigError
from serve.options import ServerOptions, options_from_args


def test_args_become_options_with_the_body_limit_in_megabytes():
    options = options_from_args({"model": "some/model", "batch_size": 16, "batch_wait_ms": 25,
                                 "max_body_mb": 0.5}, "audio-labeler")
    assert options == ServerOptions("some/model", batch_size=16, batch_wait_ms=25, max_body_bytes=2**19)


@pytest.mark.parametrize("args, says", [
    ({}, "args of audio-labeler need model"),
    ({"model": ""}, "model '' must be a Hugging Face model id"),
    ({"model": "m", "batch_size": "8"}, "batch_size '8' must be a whole number of 1 or more"),
    ({"model": "m", "batch_size": 0}, "batch_size 0 must be a whole number of 1 or more"),
    ({"model": "m", "threads": -1}, "threads -1 must be a whole number of 0 or more"),
    ({"model": "m", "batch_wait_ms": "10"}, "batch_wait_ms '10' must be a number from 0 to 10000"),
    ({"model": "m", "batch_wait_ms": 20_000}, "batch_wait_ms 20000 must be a number from 0 to 10000"),
    ({"model": "m", "max_body_mb": "16"}, "max_body_mb '16' must be a number of megabytes"),
    ({"model": "m", "max_body_mb": 0.0001}, "max_body_bytes 104 must be a whole number of 1024 or more"),
    ({"model": "m", "dtype": "int4"}, "dtype 'int4' must be one of auto, float32, bfloat16, float16, int8"),
    ({"model": "m", "score_function": "none"}, "score_function 'none' must be one of auto, sigmoid, softmax"),
    ({"model": "m", "batchsize": 8}, "unknown arg 'batchsize' for audio-labeler"),
])
def test_a_bad_arg_is_named_with_its_value_and_what_is_allowed(args, says):
    with pytest.raises(ConfigError) as caught:
        options_from_args(args, "audio-labeler")
    assert says in str(caught.value)
