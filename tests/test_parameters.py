"""parameters.json: valid for the Edge Impulse CLI's ai-action type, and every param reaches transform.py."""

import json

import pytest

from conftest import ROOT
from labeler.core import ConfigError
from transform import build_parser, parse_args

PARAMETERS = json.loads((ROOT / "parameters.json").read_text())
ITEMS = PARAMETERS["parameters"]
ITEM_TYPES = {"string", "int", "float", "select", "boolean", "bucket", "dataset", "flag", "secret", "project"}
ITEM_FIELDS = {"name", "value", "type", "param", "help", "valid", "optional", "readonly", "showIf", "multiline",
               "hint", "placeholder", "allowEmpty", "section"}
SECRETS_READ_FROM_ENV = {"HF_TOKEN", "HF_API_KEY"}


def test_top_level_is_an_ai_action_block_for_audio():
    assert PARAMETERS["version"] == 1 and PARAMETERS["type"] == "ai-action"
    info = PARAMETERS["info"]
    assert set(info) <= {"name", "description", "requiredEnvVariables", "operatesOn"}
    assert info["name"] and info["description"] and info["operatesOn"] == ["audio"]


@pytest.mark.parametrize("item", ITEMS, ids=[i["param"] for i in ITEMS])
def test_item_fields_follow_the_cli_types(item):
    assert set(item) <= ITEM_FIELDS
    assert {"name", "value", "type", "param", "help"} <= set(item)
    assert item["type"] in ITEM_TYPES and " " not in item["param"]
    assert isinstance(item["value"], (str, int, float, bool))
    if item["type"] == "select":
        assert item["value"] in [v["value"] for v in item["valid"]]
    if "multiline" in item or "allowEmpty" in item:
        assert item["type"] == "string"
    if "section" in item:
        assert item["section"] in ("advanced", "modelProfiling")
    if "showIf" in item:
        condition = item["showIf"]
        assert condition["operator"] in ("eq", "neq") and isinstance(condition["value"], str)
        target = next(i for i in ITEMS if i["param"] == condition["parameter"])
        if target["type"] == "select":
            assert condition["value"] in [v["value"] for v in target["valid"]]


def test_params_are_unique():
    params = [i["param"] for i in ITEMS]
    assert len(params) == len(set(params))


def studio_argv(item, value=None) -> list[str]:
    """How Studio passes one parameter (docs: string/int/float/select as --p value, flag as --p)."""
    value = item["value"] if value is None else value
    if item["type"] == "flag":
        return [f"--{item['param']}"] if value else []
    text = str(value).replace("\n", "\\n")  # Studio escapes newlines in multiline strings
    return [f"--{item['param']}", text]


@pytest.mark.parametrize("item", [i for i in ITEMS if i["type"] != "secret"], ids=lambda i: i["param"])
def test_every_param_is_an_argument_transform_accepts_with_its_default(item):
    options = {opt for action in build_parser()._actions for opt in action.option_strings}
    assert f"--{item['param']}" in options
    argv = ["--data-ids-file", "ids.json", "--audioset-labels", "Speech", *studio_argv(item)]
    if item["param"] == "win-stride-ms":
        argv += ["--win-size-ms", "2000"]
    args = parse_args(argv)
    parsed = getattr(args, item["param"].replace("-", "_"))
    if item["type"] in ("int", "float"):
        assert parsed == item["value"]
    elif item["type"] == "select":
        assert parsed == item["value"]


@pytest.mark.parametrize("item", [i for i in ITEMS if i["type"] == "select"], ids=lambda i: i["param"])
def test_every_select_option_is_accepted(item):
    for option in item["valid"]:
        args = parse_args(["--data-ids-file", "ids.json", "--audioset-labels", "Speech",
                           *studio_argv(item, option["value"])])
        assert getattr(args, item["param"].replace("-", "_")) == option["value"]


@pytest.mark.parametrize("item", [i for i in ITEMS if i["type"] in ("int", "float")], ids=lambda i: i["param"])
def test_numeric_params_reject_text(item):
    with pytest.raises(ConfigError, match=f"--{item['param']}"):
        parse_args(["--data-ids-file", "ids.json", "--audioset-labels", "Speech", f"--{item['param']}", "abc"])


def test_secrets_are_the_environment_variables_the_block_reads():
    secrets = {i["param"] for i in ITEMS if i["type"] == "secret"}
    assert secrets and secrets <= SECRETS_READ_FROM_ENV
