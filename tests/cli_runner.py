"""Run the command line in a fresh process, as a user would; shared by the CLI tests."""

import os
import subprocess
import sys

# One thread keeps the subprocesses fast on a busy 2-core machine; the rest of the environment
# (TIKTOKEN_CACHE_DIR, MINIGPT_DATA_DIR) passes through.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m minigpt_lib ARGS``, feeding ``stdin``; capture text output."""
    return subprocess.run(
        [sys.executable, "-m", "minigpt_lib", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
