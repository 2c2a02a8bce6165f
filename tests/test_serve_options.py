"""The server's options as a Serve config file's ``args`` give them (untyped): each bad one named,
with its value and what is allowed (serve/options.py). No Ray here."""

import pytest

from labeler.core import ConfigError
from serve.options import (HEALTH_ROOM, ServerOptions, check_body_limit, ongoing_requests_for, options_from_args,
                           read_token)
from serve.protocol import largest_block_body_bytes


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
    ({"model": "m", "max_body_mb": 0.0001}, "max_body_mb 0.0001 must be a number of megabytes, at least"),
    ({"model": "m", "max_body_mb": float("inf")}, "max_body_mb inf must be a number of megabytes"),
    ({"model": "m", "max_body_mb": float("nan")}, "max_body_mb nan must be a number of megabytes"),
    ({"model": "m", "max_body_mb": 1, "max_body_bytes": 2048}, "give max_body_mb or max_body_bytes, not both"),
    ({"model": "m", "dtype": "int4"}, "dtype 'int4' must be one of auto, float32, bfloat16, float16, int8"),
    ({"model": "m", "score_function": "none"}, "score_function 'none' must be one of auto, sigmoid, softmax"),
    ({"model": "m", "batchsize": 8}, "unknown arg 'batchsize' for audio-labeler"),
])
def test_a_bad_arg_is_named_with_its_value_and_what_is_allowed(args, says):
    with pytest.raises(ConfigError) as caught:
        options_from_args(args, "audio-labeler")
    assert says in str(caught.value)


def test_a_replica_takes_two_full_batches_and_room_for_health():
    assert ongoing_requests_for(8) == 2 * 8 + HEALTH_ROOM > 16  # the block's default 16 in flight leave room


@pytest.mark.parametrize("value, token", [("abc", "abc"), ("  abc\n", "abc"), ("", None), ("\n", None)])
def test_the_token_is_read_as_a_client_sends_it(value, token):
    assert read_token({"SERVE_TOKEN": value}) == token


def test_a_token_with_a_control_character_is_refused_without_printing_it():
    with pytest.raises(ConfigError) as caught:
        read_token({"SERVE_TOKEN": "secret\x01value"})
    assert "control character" in str(caught.value) and "secret" not in str(caught.value)


def test_a_body_limit_below_one_window_of_the_model_is_refused():
    heard = 164_080  # the AudioSet AST: 10.24 s
    check_body_limit(largest_block_body_bytes(heard), heard, "m")  # exactly enough passes
    with pytest.raises(ConfigError, match=r"--max-body-mb \(max_body_mb\) 0.437 is below the 0.44 MB"):
        check_body_limit(largest_block_body_bytes(heard) - 1, heard, "m")
