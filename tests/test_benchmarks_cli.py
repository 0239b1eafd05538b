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


def test_every_benchmark_has_help() -> None:
    """``--help`` on every script answers without loading a model, starting an app or touching data.

    ``expected`` names one option, or a tuple of options, that each script's help must list.
    """
    expected = {"recommend_scale.py": "--sizes",
                "load_feedback.py": ("--clients", "--per-client", "--recommend-clients", "--resend-fraction", "--url",
                                     "--open"),
                "gpu_check.py": "--device",
                "startup.py": "--json", "feature_throughput.py": "--json", "recommend_latency.py": "--calls",
                "faithfulness.py": "--json", "fusion_weights.py": "--json",
                "feedback_ceiling.py": "--work-dir", "hybrid_scale.py": "--items",
                "hybrid_ceiling.py": "--features-cache", "demo_session.py": "--json"}
    scripts = {p.name for p in (REPO_ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(expected) | {"feedback_loop.py"}, "a new benchmark needs a line here"
    for script, options in expected.items():
        result = subprocess.run([sys.executable, f"benchmarks/{script}", "--help"], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{script}: {result.stderr[-500:]}"
        for option in (options,) if isinstance(options, str) else options:
            assert option in result.stdout, script


def test_feedback_loop_passes_its_finetune_epochs_through_the_apps_own_flag(tmp_path: Path) -> None:
    from app import build_parser as app_parser
    from tests.conftest import load_benchmark

    loop = load_benchmark("feedback_loop")
    args = loop.build_parser().parse_args(["--data-root", str(tmp_path), "--finetune-epochs", "3"])
    cmd = loop.app_cmd(args, tmp_path / "data", tmp_path / "base", tmp_path / "users.csv", 7999)
    assert cmd[:2] == [sys.executable, str(REPO_ROOT / "app.py")]  # app.py itself, no launcher around it
    assert app_parser().parse_args(cmd[2:]).finetune_epochs == 3
