#!/usr/bin/env bash
# Benchmark minigpt_lib against its peers: bash benchmarks/run.sh [--quick] [other options of benchmarks.bench]
# Creates .venv if there is none, installs the peers, then prints JSON lines and a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet -r requirements.txt
fi
.venv/bin/python -m pip install --quiet -r benchmarks/requirements.txt
.venv/bin/python -m pip install --quiet --no-deps -r benchmarks/requirements-nodeps.txt
exec .venv/bin/python -m benchmarks.bench "$@"
