"""How long a run takes to give up on an inference endpoint that died after the preflight.

The emulated endpoint answers the preflight, then HTTP 500 to every request (``error_after=1``);
the block runs as a child process (as in Studio) with the real retry waits, over 4-second samples
in the emulated Studio. Reported: seconds from start to exit, exit code, inference requests, the
ERROR line. ``--block DIR`` runs another checkout's transform.py (e.g. the one before the circuit
breaker) against the same emulators; ``--timeout-s`` caps a run that would take too long.

Usage: python benchmarks/bench_dead_endpoint.py [--samples 20] [--win-size-ms 2000 1000]
                                                [--block DIR] [--timeout-s 900] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from common import emit  # noqa: E402

from audio import DOG_HZ, MUSIC_HZ, SPEECH_HZ, concat, noise, tone  # noqa: E402
from inference_emulator import InferenceEmulator  # noqa: E402
from studio_emulator import EmuSample, StudioEmulator  # noqa: E402

STUDIO_KEY, HF_TOKEN = "ei_bench-studio-key", "hf_bench_token"


def samples(n: int) -> list[EmuSample]:
    sounds = [lambda: tone(SPEECH_HZ, 2, 16000), lambda: tone(MUSIC_HZ, 2, 16000), lambda: tone(DOG_HZ, 2, 16000),
              lambda: noise(2, 16000)]
    return [EmuSample(700 + i, f"f{i}.wav", 16000, [concat(sounds[i % 4](), sounds[(i + 1) % 4]())])
            for i in range(n)]


def run_once(block: Path, n: int, win_ms: int, timeout_s: float) -> dict:
    with StudioEmulator(STUDIO_KEY) as studio, InferenceEmulator(HF_TOKEN) as hf, \
            tempfile.TemporaryDirectory() as tmp:
        for sample in samples(n):
            studio.state.add(sample)
        hf.state.error_after = 1
        ids = Path(tmp) / "ids.json"
        ids.write_text(json.dumps(sorted(studio.state.samples)))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EI_", "HF_"))}
        env.update({"EI_PROJECT_API_KEY": STUDIO_KEY, "EI_API_ENDPOINT": studio.endpoint, "HF_TOKEN": HF_TOKEN,
                    "HF_ENDPOINT": hf.hub, "HF_HUB_OFFLINE": "1"})
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-u", str(block / "transform.py"), "--data-ids-file", str(ids),
                               "--audioset-labels", "Speech\\nMusic\\nDog", "--backend", "remote",
                               "--inference-url", hf.url, "--win-size-ms", str(win_ms)],
                              env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        elapsed = time.monotonic() - started
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
        return {"samples": n, "win_size_ms": win_ms, "windows": n * 4000 // win_ms, "exit_code": proc.returncode,
                "seconds_to_exit": round(elapsed, 1), "inference_requests": hf.state.count,
                "studio_writes": len(studio.state.writes), "error": errors[-1] if errors else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--win-size-ms", type=int, nargs="+", default=[2000, 1000])
    parser.add_argument("--block", type=Path, default=ROOT, help="checkout whose transform.py runs")
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--out")
    args = parser.parse_args()
    results = []
    for win_ms in args.win_size_ms:
        try:
            results.append(run_once(args.block, args.samples, win_ms, args.timeout_s))
        except subprocess.TimeoutExpired:
            results.append({"samples": args.samples, "win_size_ms": win_ms, "seconds_to_exit": f"> {args.timeout_s:g}"})
        print(json.dumps(results[-1]), flush=True)
    emit({"block": str(args.block), "runs": results}, args.out)


if __name__ == "__main__":
    main()
