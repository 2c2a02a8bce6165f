"""A hub model id made available locally: the hub cache, one quick look at the hub, then a download or
one clear line.

Without this, an unreachable hub costs a run about 50 s of library retries (5 per file, up to 8 s
apart) and a screen of retry lines, whether the model is cached or not. Here the hub is asked once,
with a short deadline: a model in the cache then loads from its cache folder without another try,
and a model that is not there stops the run at once, naming the fixes.

May import: ``core``. huggingface_hub is imported only inside functions (the remote backend never loads it).
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass

from ..core import ConfigError, log

# The one look at the hub, name lookup included: a hub that answers at all answers well inside this.
HUB_PROBE_TIMEOUT_S = 3.0
# What a checkpoint needs from its hub folder before it can load without the hub.
NEEDED_FILES = ("config.json", "preprocessor_config.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_ERRNO_PREFIX = re.compile(r"^\[Errno -?\d+\]\s*")


@dataclass(frozen=True)
class HubAnswer:
    """What the hub said to a HEAD of the model's config.json: ``status`` 0 means no answer (``problem`` says why)."""

    status: int
    error_code: str = ""  # the hub's X-Error-Code (GatedRepo, RepoNotFound, EntryNotFound...)
    problem: str = ""

    @property
    def usable(self) -> bool:
        return 0 < self.status < 400


def locate(model: str) -> str:
    """What to load hub id ``model`` from: the id itself (the library downloads it, or checks its cached
    copy for updates as usual), or its folder in the hub cache when the hub does not answer.

    Raises ConfigError, with the fixes, when the model is neither reachable nor cached.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import validate_repo_id

    quiet_hub_library()
    try:
        validate_repo_id(model)
    except ValueError:  # not an id either: the loader's own message says so
        return model
    snapshot, partly = cached_snapshot(model)
    if constants.HF_HUB_OFFLINE:
        if snapshot:
            return model
        raise ConfigError(not_downloadable(model, "HF_HUB_OFFLINE is set", partly))
    answer = ask_hub(model)
    if answer.usable:
        return model
    if snapshot:
        log(f"The hub at {constants.ENDPOINT} {hub_trouble(answer)}; loading {model} from the hub cache")
        return snapshot
    if answer.status == 0:
        raise ConfigError(not_downloadable(model, f"the hub at {constants.ENDPOINT} cannot be reached "
                                                  f"({answer.problem})", partly))
    refusal = refused(model, answer)
    if refusal:
        raise ConfigError(refusal)
    # A server error or rate limit may pass: the library's own retries (about a minute at most) may still get it.
    log(f"WARNING: the hub at {constants.ENDPOINT} {hub_trouble(answer)}; trying to download {model} anyway")
    return model


def quiet_hub_library() -> None:
    """No retry lines or progress bars in the log: the run's own line says what went wrong."""
    from huggingface_hub.utils import disable_progress_bars
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()
    disable_progress_bars()


def cached_snapshot(model: str) -> tuple[str | None, bool]:
    """(the cache folder of ``model``'s main revision if it holds a whole checkpoint, whether it holds part of one)."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(model, "config.json")
    if not isinstance(config, str):
        return None, False
    folder = os.path.dirname(config)
    whole = all(os.path.isfile(os.path.join(folder, name)) for name in NEEDED_FILES) and _has_weights(folder)
    return (folder, False) if whole else (None, True)


def _has_weights(folder: str) -> bool:
    if any(os.path.isfile(os.path.join(folder, name)) for name in WEIGHT_FILES):
        return True
    for index in WEIGHT_INDEXES:  # sharded: every shard must be there
        try:
            with open(os.path.join(folder, index), encoding="utf-8") as fh:
                shards = set(json.load(fh)["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if shards and all(os.path.isfile(os.path.join(folder, shard)) for shard in shards):
            return True
    return False


def ask_hub(model: str) -> HubAnswer:
    """One HEAD of the model's config.json, no retries, given up after HUB_PROBE_TIMEOUT_S.

    A thread keeps the deadline: a name lookup cannot be timed out, and an unreachable DNS server
    takes 10 s or more to fail. The library's own client is used, so its proxies apply, and the
    token it would send. Not its full headers: building its user agent fetches a list from the hub first.
    """
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import get_session, get_token

    url = hf_hub_url(model, "config.json")
    token = get_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answers: list[HubAnswer] = []

    def ask() -> None:
        try:
            response = get_session().head(url, headers=headers, timeout=HUB_PROBE_TIMEOUT_S,
                                          follow_redirects=False)
        except Exception as exc:  # noqa: BLE001 - any failure to get an answer means the same: no hub
            text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            answers.append(HubAnswer(0, problem=_ERRNO_PREFIX.sub("", text)))
        else:
            answers.append(HubAnswer(response.status_code, response.headers.get("X-Error-Code", "")))

    probe = threading.Thread(target=ask, name="hub-probe", daemon=True)
    probe.start()
    probe.join(HUB_PROBE_TIMEOUT_S)
    return answers[0] if answers else HubAnswer(0, problem=f"no answer within {HUB_PROBE_TIMEOUT_S:g} s")


def hub_trouble(answer: HubAnswer) -> str:
    return f"cannot be reached ({answer.problem})" if answer.status == 0 else f"answered HTTP {answer.status}"


def not_downloadable(model: str, why: str, partly: bool) -> str:
    from huggingface_hub import constants

    where = "only partly in" if partly else "not in"
    return (f"--model {model} could not be downloaded: {why}, and it is {where} the hub cache "
            f"({constants.HF_HUB_CACHE}). Fixes: give a model folder with --model /path/to/model, fill the hub "
            f"cache (HF_HOME) by running once where the hub is reachable, or build the image with "
            f"--build-arg BAKE_MODEL=1 --build-arg MODEL={model}")


def refused(model: str, answer: HubAnswer) -> str:
    """The line for a hub that answered but will not give the model (no such id, private, gated); "" otherwise."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_token

    if answer.error_code == "EntryNotFound" or answer.status not in (401, 403, 404):
        return ""  # the repository is there: the loader says what it lacks
    page = f"{constants.ENDPOINT}/{model}"
    if answer.error_code == "GatedRepo":
        not_yet = " (the HF_TOKEN given has no access yet)" if get_token() else ""
        return (f"--model {model} is gated on the hub (HTTP {answer.status}): accept its terms at {page} and set "
                f"HF_TOKEN to a token of that account{not_yet}")
    if get_token():
        return (f"--model {model}: the hub at {constants.ENDPOINT} has no model by that id that HF_TOKEN may read "
                f"(HTTP {answer.status}); check the id (organization/name) and the token's access")
    return (f"--model {model}: the hub at {constants.ENDPOINT} has no public model by that id (HTTP "
            f"{answer.status}); check the id (organization/name), or set HF_TOKEN for a private or gated model")
