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
                "hybrid_ceiling.py": "--features-cache", "demo_session.py": "--json",
                "demo_ceiling.py": "--data-dir", "demo_draws.py": ("--draws", "--rule", "Protocol")}
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


def test_fusion_weights_media_mode_reports_collection_agreement(tmp_path: Path) -> None:
    """On a catalog with audio, fusion_weights.py scores collection agreement per modality and an audio-weight
    grid, and suggests audio/video weights (tiny encoders, the six-item media catalog: a smoke test)."""
    import json

    from tests.conftest import write_media_catalog

    catalog = write_media_catalog(tmp_path / "media")
    result = subprocess.run(
        [sys.executable, "benchmarks/fusion_weights.py", "--catalog", str(catalog), "--data-dir", str(tmp_path / "data"),
         "--text-encoder", "tiny-random", "--image-encoder", "tiny-random", "--audio-encoder", "tiny-random",
         "--device", "cpu", "--k", "3", "--audio-weights", "0,1,2", "--json", str(tmp_path / "out.json")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert out == json.loads((tmp_path / "out.json").read_text())
    assert out["mode"] == "media" and out["k"] == 3
    agreement = out["collection_agreement_at_3"]
    assert set(agreement) >= {"audio", "text", "image", "text_blind", "chance"}
    # Four tracks in two collections of two: for each, 1 of the 5 other items shares its collection.
    assert agreement["chance"] == 0.2
    assert all(0.0 <= v <= 1.0 for v in agreement.values())
    assert set(out["audio_weight_grid"]) == set(out["audio_weight_grid_text_blind"]) == {"0.00", "1.00", "2.00"}
    assert out["suggested_audio_weight"] in (0.0, 1.0, 2.0)
    # One clip, no collection: too few to measure, said so, and the fallback is the image weight.
    assert "note" in out["video"] and out["video"]["clips"] == 1
    assert out["suggested_video_weight"] == out["video"]["suggested_video_weight"]
    # The leak-free control's text has the collection's name removed ("A low tone" -> "A tone").
    assert "low" in out["text_blind_example"]["text"] and "low" not in out["text_blind_example"]["text_blind"]
