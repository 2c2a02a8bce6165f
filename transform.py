"""Label audio samples in Edge Impulse Studio with the Audio Spectrogram Transformer (AST).

Edge Impulse runs this file as an AI labeling ("AI Actions") block. For every sample id in
``--data-ids-file`` it downloads the sample's audio once, cuts it into windows, scores every
window over all AudioSet classes, and writes gap-free, time-ranged structured labels back to
Studio (or, with ``--propose-actions JOB``, proposes them for preview).

Usage (the arguments Studio passes; secrets and endpoints come from the environment):

    EI_PROJECT_API_KEY=ei_... python3 -u transform.py \\
        --data-ids-file ids.json \\
        --audioset-labels "Speech\\nDog (dog, 0.3)\\nMusic (music)" \\
        --win-size-ms 2000 --win-stride-ms 1000 --min-confidence 0.2 [--propose-actions 42]

Without Studio, label a folder of audio files and get an info.labels file for the uploader,
a run report (window scores, segments, Audacity labels) and one plot per file:

    python3 -u transform.py --input-dir examples --audioset-labels "Speech\nMusic" \
        --report-dir report --plot-dir plots

The model runs in-process by default (``--backend local``: CPU or CUDA, batched); ``--backend
remote --inference-url URL`` sends windows to a Hugging Face-protocol endpoint instead.

A labels line is ``Model label``, ``Model label (new name)`` or ``Model label (new name, 0.35)``
(a per-label threshold). Windows whose best label of interest stays below its threshold get
``--other-label``.

Exit codes: 0 every sample labeled (or already labeled with the same settings); 1 some samples
could not be labeled (the summary names them), or a run stopped by an error after it had written
something (to Studio or info.labels), or stopped by SIGTERM or Ctrl-C; 2 usage or configuration
error, and nothing was written.
Keys (``EI_PROJECT_API_KEY``, ``HF_TOKEN``, ``HF_API_KEY``) never appear in the output.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Sequence

from labeler.classifiers import BackendOptions, Classifier, build_classifier, warn_if_windows_are_longer_than_heard
from labeler.classifiers.local import DEVICES, DTYPES
from labeler.classifiers.remote import DEFAULT_CONCURRENCY, DEFAULT_INFERENCE_URL, DEFAULT_MAX_WAIT_S
from labeler.core import (COMBINE_RULES, DEFAULT_COMBINE, DEFAULT_LABEL_MODE, LABEL_MODES, ConfigError,
                          SampleOutcome, Settings, check_writable_folder, clean_keys, log, plural, set_secrets)
from labeler.folder import FolderTarget, open_folder
from labeler.models import DEFAULT_SCORE_FUNCTION, SCORE_FUNCTIONS
from labeler.pipeline import Observer, RunStopped, SignalStop, Target, run
from labeler.review import Plotter, Report
from labeler.studio import (DEFAULT_STUDIO_CONCURRENCY, MAX_STUDIO_CONCURRENCY, Studio, StudioTarget, env_settings,
                            read_ids)

DEFAULT_MODEL = "MIT/ast-finetuned-audioset-10-10-0.4593"
DEFAULT_WIN_SIZE_MS = 2000
DEFAULT_MIN_CONFIDENCE = 0.2

EXIT_OK, EXIT_SOME_FAILED, EXIT_CONFIG = 0, 1, 2
HF_KEY_VARIABLES = ("HF_TOKEN", "HF_API_KEY")
KEY_VARIABLES = ("EI_PROJECT_API_KEY", *HF_KEY_VARIABLES)  # the keys the block uses
# Redacted from the output too: Studio passes the organization's key although the block never uses it.
SECRET_VARIABLES = (*KEY_VARIABLES, "EI_API_KEY")


# --- arguments: validated at parse time, every message names the flag and the allowed values ---------


def _int_range(flag: str, low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            allowed = f"{low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{flag} {value} is out of range (allowed: {allowed})")
        return value
    return parse


def _float_range(flag: str, low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{flag} {value:g} is out of range (allowed: {low:g}..{high:g})")
        return value
    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="transform.py", description="Label audio samples in Edge Impulse with AST.")
    p.add_argument("--data-ids-file", help="JSON file: [id, ...] or {\"ids\": [id, ...]} (Studio passes it)")
    p.add_argument("--input-dir", help="label the audio files in this folder instead of Studio samples; "
                                       "writes DIR/info.labels for edge-impulse-uploader")
    p.add_argument("--report-dir", help="write per-window scores, segments, label totals and Audacity labels here")
    p.add_argument("--plot-dir", help="write one PNG per sample here: spectrogram, segments and score curves")
    p.add_argument("--propose-actions", type=_int_range("--propose-actions", 1), metavar="JOB",
                   help="preview mode: propose changes for this AI Actions job instead of writing")
    p.add_argument("--audioset-labels", required=True,
                   help="labels of interest, the model's class names, one per line: 'Model label', "
                        "'Model label (new name)' or 'Model label (new name, 0.35)'")
    p.add_argument("--other-label", default="other", help="label for windows with no label of interest")
    p.add_argument("--win-size-ms", type=_int_range("--win-size-ms", 0, 3_600_000), default=DEFAULT_WIN_SIZE_MS,
                   help="window length in ms (0: the whole sample is one window)")
    p.add_argument("--win-stride-ms", type=_int_range("--win-stride-ms", 1, 3_600_000), default=None,
                   help="step between windows in ms (default: the window size)")
    p.add_argument("--min-confidence", type=_float_range("--min-confidence", 0.0, 1.0),
                   default=DEFAULT_MIN_CONFIDENCE, help="score a label of interest needs (0..1, see --score-function)")
    p.add_argument("--score-function", choices=SCORE_FUNCTIONS, default=DEFAULT_SCORE_FUNCTION,
                   help="how logits become scores: auto (as the model was trained: config.problem_type, else sigmoid "
                        "for AST and softmax for other architectures), sigmoid (labels independent) or softmax "
                        "(scores sum to 1)")
    p.add_argument("--label-mode", choices=LABEL_MODES, default=DEFAULT_LABEL_MODE,
                   help="multi: time-ranged structured labels; single: one label per sample (the label of "
                        "interest holding the most time, else --other-label)")
    p.add_argument("--combine", choices=COMBINE_RULES, default=DEFAULT_COMBINE,
                   help="how overlapping windows score the time they share: min (the lowest window; keeps "
                        "event boundaries where AST's scores mean presence) or mean (overlap-weighted)")
    p.add_argument("--disable-other", action="store_true",
                   help="disable samples in which no label of interest is found (re-enabled by a later run "
                        "that finds one; samples disabled by someone else are never enabled)")
    p.add_argument("--force", action="store_true",
                   help="relabel samples already labeled with the same settings (default: skip them)")
    p.add_argument("--backend", choices=("local", "remote"), default="local",
                   help="local: run the model in this process; remote: an endpoint speaking the HF inference protocol")
    p.add_argument("--model", default=DEFAULT_MODEL, help="Hugging Face model id or local model folder")
    p.add_argument("--inference-url", default=None,
                   help=f"full POST URL for --backend remote (default {DEFAULT_INFERENCE_URL})")
    p.add_argument("--concurrency", type=_int_range("--concurrency", 1, 256), default=DEFAULT_CONCURRENCY,
                   help="inference requests in flight (remote backend)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="local backend: where the model runs (auto: CUDA when present)")
    p.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="local backend precision (auto: bf16 or fp16 on GPUs; on a CPU bf16 only where it measures "
                        "faster than float32, never int8; int8: CPU only, the model converted once with ONNX Runtime)")
    p.add_argument("--batch-size", type=_int_range("--batch-size", 0, 4096), default=0,
                   help="local backend: windows per forward pass (0: 64 on GPU, 8 on CPU)")
    p.add_argument("--threads", type=_int_range("--threads", 0, 1024), default=0,
                   help="local backend: torch CPU threads (0: the CPUs available to the container)")
    p.add_argument("--studio-concurrency", type=_int_range("--studio-concurrency", 1, MAX_STUDIO_CONCURRENCY),
                   default=DEFAULT_STUDIO_CONCURRENCY,
                   help="most Studio requests in flight (reads, downloads and writes together); "
                        "halved while Studio pushes back")
    p.add_argument("--max-wait-s", type=_float_range("--max-wait-s", 1.0, 3600.0), default=DEFAULT_MAX_WAIT_S,
                   help="longest an inference request may wait on loading, rate limits and retries")
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        log(f"WARNING: ignoring unknown arguments: {' '.join(unknown)}")
    if bool(args.data_ids_file) == bool(args.input_dir):
        raise ConfigError("give --data-ids-file (samples in Studio) or --input-dir (audio files), not both or neither")
    if args.input_dir and args.propose_actions:
        raise ConfigError("--propose-actions is for Studio jobs; it cannot be used with --input-dir")
    if args.input_dir and args.disable_other:
        raise ConfigError("--disable-other disables Studio samples and info.labels has no disabled state; "
                          "with --input-dir, filter on ast_other_share = 1.000 instead")
    if args.input_dir and os.path.isfile(args.input_dir):
        raise ConfigError(f"--input-dir {args.input_dir} is a file; give the folder that holds the audio files")
    if args.input_dir and not os.path.isdir(args.input_dir):
        raise ConfigError(f"--input-dir {args.input_dir}: no such folder")
    if args.win_stride_ms is None:
        args.win_stride_ms = args.win_size_ms or DEFAULT_WIN_SIZE_MS
    if args.win_size_ms and args.win_stride_ms > args.win_size_ms:
        raise ConfigError(f"--win-stride-ms {args.win_stride_ms} is larger than --win-size-ms "
                          f"{args.win_size_ms}; use a stride from 1 to the window size")
    url = args.inference_url or DEFAULT_INFERENCE_URL.format(model=args.model)
    if not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError(f"--inference-url {url!r} is not an http(s) URL")
    args.inference_url = url
    return args


# --- checks that need no model: they come before it loads -------------------------------------------


def check_output_folders(args: argparse.Namespace) -> None:
    """Create --report-dir and --plot-dir now and prove they take files, so a problem shows before the model loads."""
    for flag, path in (("--report-dir", args.report_dir), ("--plot-dir", args.plot_dir)):
        if not path:
            continue
        try:
            check_writable_folder(path)
        except OSError as exc:
            raise ConfigError(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from None


def check_other_label(settings: Settings) -> None:
    """Windows with no label of interest must not be written as one of them."""
    clash = [s.output_label for s in settings.specs if s.output_label.lower() == settings.other_label.lower()]
    if clash:
        raise ConfigError(f"--other-label {settings.other_label!r} is also a label of interest ({clash[0]!r} in "
                          "--audioset-labels); choose another --other-label")


# --- building the parts ------------------------------------------------------------------------------


def build_classifier_and_settings(args: argparse.Namespace, environ: dict[str, str]) -> tuple[Classifier, Settings]:
    options = BackendOptions(args.backend, args.model, args.device, args.dtype, args.batch_size, args.threads,
                             args.inference_url, args.concurrency, args.max_wait_s, args.score_function)
    classifier, specs = build_classifier(options, args.audioset_labels, environ)
    warn_if_windows_are_longer_than_heard(args.win_size_ms, classifier)
    return classifier, Settings(specs, args.other_label.strip() or "other", args.win_size_ms, args.win_stride_ms,
                                args.min_confidence, args.model, args.label_mode, args.combine, args.disable_other,
                                classifier.score_function)



def build_observers(args: argparse.Namespace, settings: Settings, classifier: Classifier) -> list[Observer]:
    observers: list[Observer] = []
    try:
        if args.report_dir:
            observers.append(Report(args.report_dir, settings, classifier.class_names))
        if args.plot_dir:
            observers.append(Plotter(args.plot_dir, settings))
    except OSError as exc:
        raise ConfigError(f"cannot write to {exc.filename}: {exc.strerror}") from None
    return observers


def print_summary(outcomes: Sequence[SampleOutcome], elapsed_s: float, note: str = "") -> int:
    failed = [o for o in outcomes if not o.ok]
    skipped = sum(o.skipped for o in outcomes)
    skip_note = f" ({skipped} already labeled with these settings, skipped)" if skipped else ""
    log(f"Done: {len(outcomes) - len(failed)} of {len(outcomes)} samples labeled{skip_note} in {elapsed_s:.1f} s"
        f"{f'; {note}' if note else ''}")
    for o in failed:
        log(f"  not labeled: sample {o.sample_id}{f' ({o.name})' if o.name else ''}: {o.detail}")
    return EXIT_SOME_FAILED if failed else EXIT_OK


def saved(target: Target, code: int) -> int:
    """The exit code once the target is finished: labels that could not be saved at the end fail the run."""
    if isinstance(target, FolderTarget) and target.unsaved:
        log(f"ERROR: {target.unsaved}", sys.stderr)
        return EXIT_SOME_FAILED
    return code


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None,
         keep_signal_handlers: bool = False) -> int:
    """Run the block; returns the exit code.

    Once the outcome is decided (the summary printed, or a setup error reported), a signal changes
    nothing. In-process callers get their signal handlers back; the program keeps the flag-only
    handler until the process is gone (``keep_signal_handlers``), so a SIGTERM just after "Done:"
    cannot turn a finished run into exit 143.
    """
    signals = SignalStop().install()
    try:
        try:
            return label(argv, environ, signals)
        finally:
            signals.raising = False
    except KeyboardInterrupt:  # a signal during setup, wherever it lands (the handler raises once at most)
        log("ERROR: interrupted before any sample was read", sys.stderr)
        return EXIT_SOME_FAILED
    finally:
        if not keep_signal_handlers:
            signals.restore()


def label(argv: Sequence[str] | None, environ: dict[str, str] | None, signals: SignalStop) -> int:
    started = time.monotonic()
    classifier = studio = None
    try:
        environ = dict(os.environ if environ is None else environ)
        set_secrets([environ.get(name, "") for name in SECRET_VARIABLES])  # never in the log from here on
        args = parse_args(list(sys.argv[1:] if argv is None else argv))
        environ = clean_keys(environ, HF_KEY_VARIABLES if args.input_dir else KEY_VARIABLES)
        if args.input_dir:
            files = open_folder(args.input_dir)
            check_output_folders(args)
            classifier, settings = build_classifier_and_settings(args, environ)
            check_other_label(settings)
            target: Target = FolderTarget(args.input_dir, settings, files.audio, existing=files.existing)
            ids: list[int] = target.keys()
            where = f"{plural(len(ids), 'file')} in {args.input_dir}"
        else:
            ids = read_ids(args.data_ids_file)
            studio_env = env_settings(environ)
            if not ids:  # a bad key or endpoint still exits 2; nothing else is loaded, created or asked
                log(f"--data-ids-file {args.data_ids_file} lists no sample ids; nothing to label")
                return EXIT_OK
            check_output_folders(args)
            # The backend proves it works (one window) before Studio is touched.
            classifier, settings = build_classifier_and_settings(args, environ)
            check_other_label(settings)
            studio = Studio(*studio_env, concurrency=args.studio_concurrency)
            target = StudioTarget(studio, args.propose_actions, settings, args.force)
            mode = f"preview (job {args.propose_actions})" if args.propose_actions else "apply"
            where = f"{plural(len(ids), 'sample')} of project {studio.project_id} in {mode} mode"
        log(f"Labeling {where} with {args.model} ({args.backend}); labels: "
            f"{', '.join(s.output_label for s in settings.specs)}")
        observers = build_observers(args, settings, classifier)
        signals.raising = False  # from here on a signal stops the run where it waits, with a summary
        outcomes = run(ids, target, classifier, settings, observers, signals.event)
        return saved(target, print_summary(outcomes, time.monotonic() - started,
                                           studio.limit.summary() if studio else ""))
    except RunStopped as stop:
        log(f"ERROR: {stop.cause}", sys.stderr)
        print_summary(stop.outcomes, time.monotonic() - started, studio.limit.summary() if studio else "")
        # 2 promises that nothing was written; once something was, a stopped run is a partial one.
        code = EXIT_CONFIG if isinstance(stop.cause, ConfigError) and not target.wrote else EXIT_SOME_FAILED
        return saved(target, code)
    except ConfigError as exc:
        log(f"ERROR: {exc}", sys.stderr)
        return EXIT_CONFIG
    finally:
        if classifier is not None:
            classifier.close()
        if studio is not None:
            studio.close()


def exit_with(code: int) -> None:
    """Exit at once with ``code``: everything was reported and saved already.

    No interpreter shutdown: it would wait for threads still on the network after a stopped run
    (inference retries) past docker stop's 10 s, and it puts the default signal handlers back
    before the process is gone, so a late SIGTERM would still end a finished run with 143.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_with(main(keep_signal_handlers=True))
