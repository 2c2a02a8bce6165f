"""Studio: the few calls this block makes through the official ``edgeimpulse-api`` client (with
timeouts, retries and named errors), how a sample is loaded, and how its labels are written
inside the labeling -> done metadata bracket (or proposed, in preview).

Every Studio request of a run (reads, downloads, writes) shares one adaptive budget of requests
in flight (``--studio-concurrency``): Studio publishes no rate limits, so the budget is what keeps
the block polite. It halves on a 429, a 5xx, a timeout or a "too many requests" refusal and grows
back on successes; writes of samples in flight go before reads of new ones. Retries live in
``Studio._call`` alone (urllib3 only follows redirects, stripping the key on another host).

May import: ``core``, ``audio``, ``timeline``, ``records``. The client is imported when a Studio
connection is built.
"""

from __future__ import annotations

import collections
import json
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .audio import decode_wav_file_16k
from .core import (AdaptiveLimit, AlreadyLabeled, AuthError, ConfigError, LoadedSample, SampleError, SampleInfo,
                   Settings, backoff_s, first_few, log, plural, retry_after_s)
from .records import (DISABLE, ENABLE, STATUS_DONE, STATUS_KEY, STATUS_LABELING, already_labeled, block_metadata,
                      disabled_mark, enabled_change, segment_json)
from .timeline import Labeling, Segment

DEFAULT_EI_API_ENDPOINT = "https://studio.edgeimpulse.com/v1"
STUDIO_TIMEOUT_S = (10.0, 120.0)  # (connect, read)
STUDIO_ATTEMPTS = 7  # per request: the first try and six retries
DEFAULT_STUDIO_CONCURRENCY = 32  # hides a 100 ms round trip for one-second clips (benchmarks/bench_studio.py)
MAX_STUDIO_CONCURRENCY = 64
STUDIO_MAX_REDIRECTS = 5
# Studio's Retry-After is obeyed up to this: it holds the request and every new one (the budget).
# One "Retry-After: 86400" must not stall a run for a day.
STUDIO_MAX_WAIT_S = 60.0
WAIT_LOGGED_S = 10.0  # a wait longer than this is said in the log
DOWNLOAD_CHUNK_BYTES = 1 << 20
# A download larger than this goes to a temporary file while it arrives; only the decoded 16 kHz
# mono audio is held in memory.
DOWNLOAD_IN_MEMORY_BYTES = 8 << 20
IDS_SHOWN = 5  # repeated ids named in the log line
CHANGE_NOTES = {DISABLE: "disabled: no label of interest found", ENABLE: "enabled again: a label of interest found"}
PROPOSED_CHANGE_NOTES = {DISABLE: "would be disabled: no label of interest found",
                         ENABLE: "would be enabled again: a label of interest found"}


def read_ids(path: str) -> list[int]:
    """Read ids.json: a bare array (what Studio writes) or {"ids": [...]} (what the docs show).

    A UTF-8 byte order mark is skipped: some Windows editors save one.
    """
    try:
        with open(path, encoding="utf-8-sig") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ConfigError(f"--data-ids-file {path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(f"--data-ids-file {path}: not valid JSON ({exc})") from None
    ids = data.get("ids") if isinstance(data, dict) else data
    if not isinstance(ids, list):
        raise ConfigError(f"--data-ids-file {path}: expected a JSON array of sample ids or {{\"ids\": [...]}}")
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, int) or i <= 0]
    if bad:
        raise ConfigError(f"--data-ids-file {path}: sample ids must be positive integers, got {bad[0]!r}")
    repeated = sorted(i for i, n in collections.Counter(ids).items() if n > 1)
    if repeated:
        log(f"--data-ids-file {path}: {plural(len(repeated), 'sample id')} listed more than once "
            f"({first_few(repeated, IDS_SHOWN)}); each sample is labeled once")
    return list(dict.fromkeys(ids))


def env_settings(environ: Mapping[str, str]) -> tuple[str, str, int | None]:
    key = environ.get("EI_PROJECT_API_KEY", "").strip()
    if not key:
        raise ConfigError("EI_PROJECT_API_KEY is not set; set it to the project's API key (Dashboard > Keys)")
    endpoint = environ.get("EI_API_ENDPOINT", "").strip() or DEFAULT_EI_API_ENDPOINT
    if not re.match(r"^https?://", endpoint):
        raise ConfigError(f"EI_API_ENDPOINT {endpoint!r} is not an http(s) URL")
    project = environ.get("EI_PROJECT_ID", "").strip()
    # ASCII digits only: str.isdigit() also accepts "²", which int() then refuses.
    if project and (not re.fullmatch(r"[0-9]+", project) or int(project) <= 0):
        raise ConfigError(f"EI_PROJECT_ID {project!r} is not a positive integer; set it to the project's id "
                          "(or leave it unset)")
    return endpoint.rstrip("/"), key, int(project) if project else None


def studio_hold_s(retry_after_s: float | None) -> float | None:
    """How long a Studio Retry-After holds the request and the budget: capped at STUDIO_MAX_WAIT_S."""
    return None if retry_after_s is None else min(retry_after_s, STUDIO_MAX_WAIT_S)


def _logged_wait_s(retry: _Retry, hold_s: float | None, attempt: int, what: str) -> float:
    """The wait before the next attempt; a long one is said in the log (a run that seems stuck is not)."""
    wait_s = backoff_s(attempt) if hold_s is None else hold_s
    asked_s = retry.retry_after_s or 0.0
    if max(wait_s, asked_s) > WAIT_LOGGED_S:
        asked = f" (Retry-After {asked_s:g} s; at most {STUDIO_MAX_WAIT_S:g} s is waited)" if asked_s > wait_s else ""
        log(f"Studio: waiting {wait_s:g} s before retrying {what}{asked}: {retry.problem}")
    return wait_s


class StudioRefused(SampleError):
    """Studio answered and said no (a 4xx, a refusal, or only "slow down" until the retries ran out):
    a write that ends so did not change the sample."""


@dataclass(frozen=True)
class _Retry:
    """A failed Studio request worth retrying: why, and whether Studio is asking the block to slow down."""

    problem: str
    overloaded: bool
    retry_after_s: float | None = None


class Studio:
    """The few Studio calls this block makes, with one request budget, retries, timeouts and named errors."""

    def __init__(self, endpoint: str, api_key: str, project_id: int | None,
                 concurrency: int = DEFAULT_STUDIO_CONCURRENCY):
        import urllib3
        import edgeimpulse_api as ei

        config = ei.Configuration(host=endpoint, api_key={"ApiKeyAuthentication": api_key})
        # One connection per request the budget allows, so connections are reused, not reopened
        # (the client otherwise sizes its pool from the CPU count).
        config.connection_pool_maxsize = concurrency
        # urllib3 retries nothing (429s and 5xx must reach the budget, see _call); it only follows
        # redirects. Studio may redirect downloads to storage: the key must not follow to another host.
        config.retries = urllib3.Retry(
            total=None, connect=0, read=0, status=0, other=0, redirect=STUDIO_MAX_REDIRECTS,
            status_forcelist=(), allowed_methods=None, respect_retry_after_header=False, raise_on_status=False,
            remove_headers_on_redirect=["Authorization", "Cookie", "Proxy-Authorization", "x-api-key"],
        )
        self._ei = ei
        # Set once a write may have reached Studio (it succeeded, or its answer never came):
        # from then on a stopped run has changed the project.
        self.wrote = False
        self._client = ei.ApiClient(config)
        self._raw = ei.RawDataApi(self._client)
        self.limit = AdaptiveLimit(concurrency, "Studio")
        self.project_id = self._resolve_project(project_id)

    def _resolve_project(self, project_id: int | None) -> int:
        try:
            projects = self._call(lambda: self._ei.ProjectsApi(self._client).list_projects(
                _request_timeout=STUDIO_TIMEOUT_S), "listing projects").projects or []
        except SampleError as exc:  # before any sample: Studio itself is unusable
            raise ConfigError(f"{exc}; check EI_API_ENDPOINT") from None
        if project_id is not None:
            return project_id
        if not projects:
            raise ConfigError("the Studio API key gives access to no project; use a project API key")
        return int(projects[0].id)

    def read_sample(self, sample_id: int, job_id: int | None) -> SampleInfo:
        resp = self._call(lambda: self._raw.get_sample(
            self.project_id, sample_id, limit_payload_values=1, proposed_actions_job_id=job_id,
            _request_timeout=STUDIO_TIMEOUT_S), f"reading sample {sample_id}")
        sample = resp.sample
        axes = [s for s in (sample.sensors or []) if (s.units or "").lower() == "wav"]
        if not axes:
            units = ", ".join(f"{s.name} ({s.units})" for s in sample.sensors or []) or "none"
            raise SampleError(f"not an audio sample (its axes are: {units})")
        if not sample.frequency or not sample.values_count:
            raise SampleError("the sample has no audio values (frequency or valuesCount is 0)")
        return SampleInfo(int(sample.id or sample_id), sample.filename or str(sample_id), float(sample.frequency),
                          int(sample.values_count), int(axes[0].index), dict(sample.metadata or {}),
                          bool(sample.is_disabled), bool(sample.structured_labels))

    def download_wav(self, info: SampleInfo):
        """The sample's WAV file as a seekable file object (in memory, or on disk when large)."""

        def download():
            resp = self._raw.get_sample_as_audio(self.project_id, info.sample_id, axis_ix=info.axis_ix,
                                                 _preload_content=False, _request_timeout=STUDIO_TIMEOUT_S)
            spool = tempfile.SpooledTemporaryFile(max_size=DOWNLOAD_IN_MEMORY_BYTES)
            try:
                for chunk in resp.stream(DOWNLOAD_CHUNK_BYTES):
                    spool.write(chunk)
            except BaseException:
                spool.close()
                raise
            finally:
                resp.release_conn()
            spool.seek(0)
            _raise_if_busy(spool)
            return spool

        return self._call(download, f"downloading sample {info.sample_id}")

    def set_labels(self, sample_id: int, segments: Sequence[Segment]) -> None:
        request = self._ei.SetSampleStructuredLabelsRequest.from_dict(
            {"structuredLabels": [segment_json(s) for s in segments]})
        self._call(lambda: self._raw.set_sample_structured_labels(
            self.project_id, sample_id, request, _request_timeout=STUDIO_TIMEOUT_S),
            f"writing labels of sample {sample_id}", urgent=True)

    def set_label(self, sample_id: int, label: str) -> None:
        request = self._ei.EditSampleLabelRequest.from_dict({"label": label})
        self._call(lambda: self._raw.edit_label(
            self.project_id, sample_id, request, _request_timeout=STUDIO_TIMEOUT_S),
            f"writing the label of sample {sample_id}", urgent=True)

    def set_enabled(self, sample_id: int, enabled: bool) -> None:
        call, what = (self._raw.enable_sample, "enabling") if enabled else (self._raw.disable_sample, "disabling")
        self._call(lambda: call(self.project_id, sample_id, _request_timeout=STUDIO_TIMEOUT_S),
                   f"{what} sample {sample_id}", urgent=True)

    def set_metadata(self, sample_id: int, metadata: dict[str, str]) -> None:
        request = self._ei.SetSampleMetadataRequest.from_dict({"metadata": metadata})
        self._call(lambda: self._raw.set_sample_metadata(
            self.project_id, sample_id, request, _request_timeout=STUDIO_TIMEOUT_S),
            f"writing metadata of sample {sample_id}", urgent=True)

    def propose(self, sample_id: int, job_id: int, changes: dict) -> None:
        request = self._ei.SetSampleProposedChangesRequest.from_dict({"jobId": job_id, "proposedChanges": changes})
        self._call(lambda: self._raw.set_sample_proposed_changes(
            self.project_id, sample_id, request, _request_timeout=STUDIO_TIMEOUT_S),
            f"proposing changes for sample {sample_id}", urgent=True)

    def close(self) -> None:
        self._client.rest_client.pool_manager.clear()

    def _call(self, fn: Callable, what: str, urgent: bool = False):
        """Run one client call inside the budget; the one place Studio requests are retried.

        Every write here is a "set" (idempotent), so retrying POSTs is safe. Urgent calls are the writes.
        """
        may_have_applied = False
        for attempt in range(STUDIO_ATTEMPTS):
            ticket = self.limit.acquire(urgent)
            try:
                result, failure = fn(), None
            except Exception as exc:  # noqa: BLE001 - sorted into permanent and retryable below
                result, failure = None, exc
            finally:
                self.limit.release()
            if failure is not None and self._may_have_applied(failure):
                may_have_applied = True
            if urgent and (failure is None or may_have_applied):
                self.wrote = True
            if failure is None:
                self.limit.succeeded()
                return result
            try:
                retry = self._retryable(failure, what)  # raises when a retry cannot help
            except StudioRefused as exc:
                if may_have_applied:  # an earlier attempt may have landed: not a clean refusal
                    raise SampleError(str(exc)) from None
                raise
            hold_s = studio_hold_s(retry.retry_after_s)
            if retry.overloaded:
                self.limit.throttled(ticket, hold_s)
            if attempt + 1 == STUDIO_ATTEMPTS:
                gave_up = SampleError if may_have_applied else StudioRefused
                raise gave_up(f"{retry.problem} (gave up after {STUDIO_ATTEMPTS} attempts)")
            time.sleep(_logged_wait_s(retry, hold_s, attempt, what))
        raise AssertionError("unreachable")

    def _may_have_applied(self, exc: Exception) -> bool:
        """Whether a failed write may still have changed the sample: its answer never came, or Studio broke."""
        import urllib3

        if isinstance(exc, self._ei.exceptions.ApiException):
            return exc.status is None or exc.status >= 500
        return isinstance(exc, urllib3.exceptions.HTTPError)

    def _retryable(self, exc: Exception, what: str) -> _Retry:
        """Sort a failed call: raise for answers a retry cannot change, describe the rest."""
        import urllib3

        exceptions = self._ei.exceptions
        if isinstance(exc, (exceptions.UnauthorizedException, exceptions.ForbiddenException)):
            raise AuthError(f"Studio rejected EI_PROJECT_API_KEY while {what} (HTTP {exc.status}); "
                            "use the project's API key (Dashboard > Keys)") from None
        if isinstance(exc, exceptions.ApiException):
            problem = f"Studio failed while {what} (HTTP {exc.status} {exc.reason})"
            if exc.status == 429 or exc.status >= 500:
                wait = retry_after_s(exc.headers, 0.0) if exc.headers is not None else 0.0
                return _Retry(problem, True, wait or None)  # "Retry-After: 0" means: use the backoff
            raise StudioRefused(problem) from None
        if isinstance(exc, urllib3.exceptions.HTTPError):
            reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
            timed_out = isinstance(reason, urllib3.exceptions.TimeoutError)
            return _Retry(f"could not reach Studio while {what} ({type(reason).__name__})", timed_out)
        if isinstance(exc, (KeyError, TypeError)):
            raise SampleError(f"Studio sent an unexpected answer while {what} ({exc!r:.80})") from None
        # The client raises a plain Exception for {"success": false}.
        message = f"Studio refused {what}: {str(exc)[:200]}"
        if _TRANSIENT_STUDIO_RE.search(str(exc)):
            return _Retry(message, True)
        raise StudioRefused(message) from None


# Studio answers most failures as 200 {"success": false}; these words mark the ones worth retrying
# (all of them say Studio is busy, so the budget shrinks too).
_TRANSIENT_STUDIO_RE = re.compile(r"try again|timed? ?out|temporar|too many requests|rate limit|unavailable|busy",
                                  re.IGNORECASE)


class StudioBusy(Exception):
    """Studio answered a download with a busy {"success": false} instead of audio."""


def _raise_if_busy(spool) -> None:
    """Raise StudioBusy for a busy refusal in place of audio, so it is retried like any call.

    Other JSON answers stay in the file; decoding reports them as "not a WAV file".
    """
    head = spool.read(4096)
    spool.seek(0)
    if not head.startswith(b"{"):
        return
    try:
        error = str(json.loads(head).get("error", ""))
    except (ValueError, AttributeError):
        return
    if _TRANSIENT_STUDIO_RE.search(error):
        spool.close()
        raise StudioBusy(error)


def load_sample(studio: Studio, sample_id: int, job_id: int | None, skip_done: Settings | None = None,
                admit: Callable[[SampleInfo], None] = lambda info: None) -> LoadedSample:
    """Read, download and decode one sample; with ``skip_done``, stop early if it is already labeled.

    ``admit`` sees the sample's length before its audio is downloaded, and may wait for memory.
    """
    info = studio.read_sample(sample_id, job_id)
    if skip_done is not None and already_labeled(info.metadata, skip_done):
        raise AlreadyLabeled(info)
    admit(info)
    with studio.download_wav(info) as wav:
        audio, rate_hz, frames = decode_wav_file_16k(wav)
    expected_s, got_s = info.values_count / info.frequency_hz, frames / rate_hz
    if abs(expected_s - got_s) > max(0.05, 0.01 * expected_s):
        log(f"WARNING: sample {sample_id}: Studio says {expected_s:.2f} s but the WAV holds {got_s:.2f} s; "
            "labels follow Studio's length")
    return LoadedSample(info, audio)


def label_changes(info: SampleInfo, labeling: Labeling) -> tuple[dict, str | None]:
    """The label part of a write, as propose-changes keys, and what the log line should add.

    Single-label mode writes a plain label, except where the sample already has structured
    labels: Studio then ignores its plain label and no call clears them, so one structured label
    covering the whole sample says the same thing.
    """
    if labeling.single_label is None:
        return {"structuredLabels": [segment_json(s) for s in labeling.segments]}, None
    if info.has_structured_labels:
        return ({"structuredLabels": [segment_json(s) for s in labeling.segments]},
                "as one structured label: the sample already has structured labels")
    return {"label": labeling.single_label}, None


def write_result(studio: Studio, info: SampleInfo, labeling: Labeling, settings: Settings,
                 job_id: int | None) -> str | None:
    """Apply: mark the sample as being labeled where needed, write the labels, then mark it done.

    Studio has no transaction, so the metadata brackets the labels: a run killed anywhere in
    between leaves status "labeling" (or older settings), and the next run relabels the sample.
    The labeling mark only matters when the sample already says "done" (an earlier run, other
    settings, --force): without it, a kill after the new labels would leave a done mark that a
    rerun with those earlier settings trusts. A sample without a done mark skips it (one round
    trip less): until the done mark lands, a rerun relabels it anyway. A sample about to be
    disabled or enabled always gets it: before a disable it carries the disabled mark (the
    intent), so a disable that lands in a run that stops before its done mark is still the
    block's to undo (``records.disabled_mark``). A disable Studio refused gets one more metadata
    write that drops the intent. Preview: one propose-changes with everything.
    Returns a note for the sample's log line, or None.
    """
    labels, note = label_changes(info, labeling)
    change = enabled_change(info.metadata, info.is_disabled, labeling.found_interest, settings.disable_other)
    done = {**block_metadata(info.metadata, settings, STATUS_DONE,
                             disabled_mark(info.metadata, info.is_disabled, change, done=True)),
            **labeling.confidence}
    if job_id is not None:
        changes = {**labels, "metadata": done}
        if change is not None:
            changes["isDisabled"] = change == DISABLE
        studio.propose(info.sample_id, job_id, changes)
        return "; ".join(n for n in (note, PROPOSED_CHANGE_NOTES.get(change)) if n) or None
    if info.metadata.get(STATUS_KEY) == STATUS_DONE or change is not None:
        studio.set_metadata(info.sample_id, block_metadata(
            info.metadata, settings, STATUS_LABELING, disabled_mark(info.metadata, info.is_disabled, change, done=False)))
    if "label" in labels:
        studio.set_label(info.sample_id, labels["label"])
    else:
        studio.set_labels(info.sample_id, labeling.segments)
    if change is not None:
        _set_enabled(studio, info, settings, change)
    studio.set_metadata(info.sample_id, done)
    return "; ".join(n for n in (note, CHANGE_NOTES.get(change)) if n) or None


def _set_enabled(studio: Studio, info: SampleInfo, settings: Settings, change: str) -> None:
    """Disable or enable; a disable Studio answered with a refusal drops the intent it recorded."""
    try:
        studio.set_enabled(info.sample_id, change == ENABLE)
    except StudioRefused:
        if change == DISABLE:
            try:  # the sample is still enabled: the intent must not outlive the refusal
                studio.set_metadata(info.sample_id, block_metadata(info.metadata, settings, STATUS_LABELING, False))
            except SampleError:
                pass  # the refusal is what the summary reports; a later write that finds it enabled drops the mark
        raise


class StudioTarget:
    """Samples read from and labels written to a Studio project."""

    def __init__(self, studio: Studio, job_id: int | None, settings: Settings, force: bool):
        self.studio, self.job_id, self.settings = studio, job_id, settings
        # Preview never skips: Studio shows only samples that got a proposal.
        self._skip_done = None if force or job_id is not None else settings
        self.rerun_skips_finished = self._skip_done is not None  # what the stop messages promise a rerun
        self.verb = "proposed" if job_id is not None else "written"
        self.parallel = studio.limit.maximum  # samples loaded and written at once; the budget bounds requests

    @property
    def wrote(self) -> bool:
        """Whether anything of this run may have reached the project."""
        return self.studio.wrote

    def load(self, sample_id: int, admit: Callable[[SampleInfo], None] = lambda info: None) -> LoadedSample:
        return load_sample(self.studio, sample_id, self.job_id, self._skip_done, admit)

    def write(self, info: SampleInfo, labeling: Labeling) -> str | None:
        return write_result(self.studio, info, labeling, self.settings, self.job_id)

    def finish(self) -> None:
        pass
