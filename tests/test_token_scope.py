"""The token stays where it belongs: a self-hosted server's token never goes to the hub.

A Hugging Face endpoint takes a hub token, so one token serves both; any other server's token is
its own, and the hub gets HF_TOKEN only when the user set it apart from the server's (HF_API_KEY).
"""

import pytest

from conftest import HF_TOKEN
from inference_emulator import InferenceEmulator
from labeler.classifiers.remote import DEFAULT_HF_ENDPOINT, choose_tokens, hub_may_see_endpoint_token, \
    is_hugging_face_host

SERVE_TOKEN = "serve_secretServerToken24680"
HUB = DEFAULT_HF_ENDPOINT
SERVER = "http://ray-head.internal:8000/classify"
WITHHELD_HINT = ("the endpoint's token is not sent to the hub: set HF_TOKEN to a hub token for a private or gated "
                 "model (and HF_API_KEY to the server's token)")


@pytest.mark.parametrize("url, hugging_face", [
    ("https://huggingface.co/api", True),
    ("https://router.huggingface.co/hf-inference/models/MIT/ast", True),
    ("https://HF.CO/x", True),
    ("https://xyz123.us-east-1.aws.endpoints.huggingface.cloud/", True),
    ("https://someone-demo.hf.space/classify", True),
    ("https://huggingface.co.:443/x", True),  # the fully qualified form of the same host
    ("https://huggingface.co.evil.com/x", False),
    ("https://evilhuggingface.co/x", False),
    ("https://huggingface.co@evil.com/x", False),  # user info, not the host
    ("https://evil.com/huggingface.co", False),
    ("https://evil.com/?next=https://hf.co", False),
    ("https://huggingface.com/x", False),
    ("http://127.0.0.1:8000/classify", False),
])
def test_hugging_face_hosts_are_matched_on_the_parsed_host_never_a_substring(url, hugging_face):
    assert is_hugging_face_host(url) is hugging_face


@pytest.mark.parametrize("inference_url, hub_endpoint, may_see", [
    ("https://xyz.endpoints.huggingface.cloud/", HUB, True),
    ("https://xyz.endpoints.huggingface.cloud/", "http://127.0.0.1:9000", True),  # a Hugging Face endpoint anyway
    (SERVER, HUB, False),
    ("http://127.0.0.1:8000/hf-inference/models/m", "http://127.0.0.1:8000", True),  # the hub's own origin
    ("http://127.0.0.1:8000/hf-inference/models/m", "http://127.0.0.1:8001", False),  # another port
    ("https://mirror.example/infer", "http://mirror.example", False),  # another scheme
    ("https://mirror.example/infer", "https://MIRROR.example:443/", True),  # the default port, spelt out
    ("https://mirror.example:8443/infer", "https://mirror.example", False),
])
def test_the_hub_may_see_the_endpoint_token_only_on_a_hugging_face_host_or_its_own_origin(
        inference_url, hub_endpoint, may_see):
    assert hub_may_see_endpoint_token(inference_url, hub_endpoint) is may_see


@pytest.mark.parametrize("inference_url, environ, endpoint, hub", [
    ("https://xyz.endpoints.huggingface.cloud/", {"HF_TOKEN": "hf_a", "HF_API_KEY": "hf_b"}, "hf_a", "hf_a"),
    ("https://xyz.endpoints.huggingface.cloud/", {"HF_API_KEY": "hf_b"}, "hf_b", "hf_b"),
    (SERVER, {"HF_TOKEN": "hf_a", "HF_API_KEY": "serve_b"}, "serve_b", "hf_a"),
    (SERVER, {"HF_API_KEY": "serve_b"}, "serve_b", None),
    (SERVER, {"HF_TOKEN": "serve_b"}, "serve_b", None),  # Studio's one secret holds the server's token
    (SERVER, {"HF_TOKEN": "same", "HF_API_KEY": "same"}, "same", None),
    (SERVER, {}, None, None),
])
def test_each_destination_gets_its_own_token(inference_url, environ, endpoint, hub):
    tokens = choose_tokens(inference_url, HUB, environ)
    assert (tokens.endpoint, tokens.hub) == (endpoint, hub)


# --- end to end: the block against a server and a hub on two origins ------------------------------------------


@pytest.fixture
def server():
    """A self-hosted server (its own origin, its own token); the ``hf`` fixture acts as the hub."""
    with InferenceEmulator(SERVE_TOKEN) as emulator:
        yield emulator


def hub_header_values(hf) -> list[str]:
    return [value for request in hf.state.hub_requests for value in request["headers"].values()]


def authorizations(requests) -> set[str | None]:
    return {request["headers"].get("Authorization") for request in requests}


@pytest.mark.parametrize("variable", ["HF_TOKEN", "HF_API_KEY"])
def test_the_servers_token_set_alone_never_reaches_the_hub(project, hf, server, run_block, variable):
    result = run_block("--inference-url", server.url, env={"HF_TOKEN": None, variable: SERVE_TOKEN})
    assert result.code == 0, result.out + result.err
    assert hf.state.hub_requests, "the hub was read"
    assert not any(SERVE_TOKEN in value for value in hub_header_values(hf))
    assert authorizations(server.state.requests) == {f"Bearer {SERVE_TOKEN}"}


def test_with_both_set_the_hub_gets_hf_token_and_the_server_hf_api_key(project, hf, server, run_block):
    hf.state.hub_token = HF_TOKEN  # a private model: the hub answers 401 to anything else
    result = run_block("--inference-url", server.url, env={"HF_TOKEN": HF_TOKEN, "HF_API_KEY": SERVE_TOKEN})
    assert result.code == 0, result.out + result.err
    assert authorizations(hf.state.hub_requests) == {f"Bearer {HF_TOKEN}"}
    assert authorizations(server.state.requests) == {f"Bearer {SERVE_TOKEN}"}
    assert "could not read" not in result.out


@pytest.mark.parametrize("score_function, warning", [
    ("auto", "WARNING: could not read the config of"),  # the first warning that names the config
    ("softmax", "WARNING: could not read the label list of"),  # the only one, with the score function chosen
])
def test_a_private_model_read_without_the_servers_token_is_explained_once(project, hf, server, run_block,
                                                                          score_function, warning):
    hf.state.hub_token = HF_TOKEN
    result = run_block("--inference-url", server.url, "--score-function", score_function,
                       env={"HF_TOKEN": None, "HF_API_KEY": SERVE_TOKEN})
    assert result.code == 0, result.out + result.err  # labels learned from the server's answer
    hinted = [line for line in result.out.splitlines() if WITHHELD_HINT in line]
    assert len(hinted) == 1 and hinted[0].startswith(warning), result.out
    assert f"(HTTP 401; {WITHHELD_HINT})" in hinted[0]


def test_a_server_rejecting_its_token_is_told_to_set_hf_api_key(project, hf, server, run_block):
    result = run_block("--inference-url", server.url, env={"HF_TOKEN": None, "HF_API_KEY": "serve_wrongToken"})
    assert result.code == 2
    errors = result.err.strip().splitlines()
    assert len(errors) == 1 and "rejected the token (HTTP 401" in errors[0]
    assert errors[0].endswith("set HF_API_KEY to the server's token (or HF_TOKEN when only that is set)")
    assert project.state.requests == []
