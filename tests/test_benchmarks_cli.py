"""Benchmark scripts' command lines (cheap: --help only, no model or app is started)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_feedback_loop_help() -> None:
    result = subprocess.run([sys.executable, "benchmarks/feedback_loop.py", "--help"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--labels" in result.stdout
    assert "Protocol" in result.stdout
