#!/usr/bin/env bash
# Mutation testing of the pure modules labeler/labels.py and labeler/timeline.py with mutmut,
# against their fast unit tests only (tests/test_labels.py, tests/test_timeline.py; see [mutmut]
# in setup.cfg). Slow (about 15-30 min on 2 cores), so not part of CI.
#
# Usage: benchmarks/mutation.sh [PYTHON] [--max-children N]
#   PYTHON: an interpreter with requirements-dev.txt installed (mutmut among them); default .venv/bin/python
# Runs in a copy of the tracked files (mutmut writes its mutants/ folder next to the sources), then
# writes the kill rate and every surviving mutant with its diff to bench-results/mutation-report.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-.venv/bin/python}
[ $# -gt 0 ] && shift
python=$(cd "$(dirname "$python")" && pwd)/$(basename "$python")  # keep the venv link
children=(--max-children 1)
[ $# -gt 0 ] && children=("$@")

work=$(mktemp -d /tmp/mutation.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The working tree as it is (untracked files too, ignored ones not): uncommitted changes count.
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work"

started=$(date +%s)
(cd "$work" && "$python" -m mutmut run "${children[@]}" > mutmut-run.log 2>&1) \
    || { tail -30 "$work/mutmut-run.log"; exit 1; }
elapsed=$(( $(date +%s) - started ))

mkdir -p bench-results
report=$PWD/bench-results/mutation-report.txt
(cd "$work" && "$python" -m mutmut results --all true > results.txt 2>&1 || true
 "$python" - "$elapsed" > "$report" <<'PY'
import re, subprocess, sys
pairs = [line.strip().rsplit(": ", 1) for line in open("results.txt") if ": " in line]
status = {p[0]: p[1] for p in pairs if p[0].startswith("labeler.")}
counts = {}
for name, state in status.items():
    counts[state] = counts.get(state, 0) + 1
detected = counts.get("killed", 0) + counts.get("timeout", 0) + counts.get("segfault", 0)
total = len(status)
print(f"mutants: {total}, killed or timed out: {detected}, kill rate: {100 * detected / max(total, 1):.1f} %,"
      f" run time: {sys.argv[1]} s")
print("by outcome:", ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
for name, state in sorted(status.items()):
    if state not in ("killed", "timeout", "segfault"):
        diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], capture_output=True, text=True).stdout
        print(f"\n=== {name}: {state}\n{diff}")
PY
)
head -2 "$report"
echo "survivors and their diffs: $report"
