"""Hugging Face Spaces deployment: README front matter, ZeroGPU decorators, and a start with a Space's environment."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import types
from pathlib import Path

import gradio as gr
import pytest
import yaml

from app import parse_config
from tests.app_process import free_port, wait_until_serving
from tests.conftest import REPO_ROOT
from ui import gpu, handlers

REQUIRED_KEYS = ("title", "emoji", "colorFrom", "colorTo", "sdk", "sdk_version", "python_version", "app_file",
                 "hf_oauth", "short_description", "license", "tags", "startup_duration_timeout")
# What the Spaces configuration reference allows for the card colours.
COLOURS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}


def _front_matter() -> tuple[dict, str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), "README.md must open with the Spaces YAML front matter"
    head, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(head), body


# -- README -------------------------------------------------------------------------------------------
def test_front_matter_has_the_space_keys_and_pins_the_installed_gradio() -> None:
    meta, body = _front_matter()
    assert [k for k in REQUIRED_KEYS if k not in meta] == []
    assert meta["sdk"] == "gradio"
    assert meta["sdk_version"] == gr.__version__  # the Space installs exactly this Gradio
    assert meta["app_file"] == "app.py" and (REPO_ROOT / meta["app_file"]).is_file()
    assert meta["hf_oauth"] is True
    assert meta["license"] == "apache-2.0"
    assert {meta["colorFrom"], meta["colorTo"]} <= COLOURS
    assert isinstance(meta["python_version"], str) and tuple(map(int, meta["python_version"].split("."))) >= (3, 10)
    assert 0 < len(meta["short_description"]) <= 60  # the Hub refuses longer ones
    assert isinstance(meta["tags"], list) and meta["tags"]
    assert isinstance(meta["startup_duration_timeout"], str) and meta["startup_duration_timeout"][-1] in "mh"
    # Below the front matter the README still opens with the title and the two Quick start commands.
    assert body.lstrip().startswith("# Multimodal Recommendation Studio")
    quick = body.split("## Quick start", 1)[1]
    assert quick.index(".venv/bin/python app.py") < quick.index(".venv/bin/python -m pytest -q") < quick.index("\n## ")
    assert "## Deploy to Hugging Face Spaces" in body


# -- ZeroGPU -----------------------------------------------------------------------------------------
def _double(x: int) -> int:
    return 2 * x


def test_gpu_task_is_a_no_op_off_zero_gpu(monkeypatch) -> None:
    monkeypatch.delenv(gpu.ZERO_GPU_ENV, raising=False)
    assert gpu.gpu_task(10)(_double) is _double
    monkeypatch.setenv(gpu.ZERO_GPU_ENV, "false")
    assert gpu.gpu_task(10)(_double) is _double


def test_gpu_task_uses_spaces_gpu_on_zero_gpu(monkeypatch) -> None:
    calls = []

    def fake_gpu(*, duration):
        def decorate(fn):
            calls.append((fn, duration))
            return lambda *a, **k: ("on gpu", fn(*a, **k))
        return decorate

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=fake_gpu))
    monkeypatch.setenv(gpu.ZERO_GPU_ENV, "true")
    wrapped = gpu.gpu_task(15)(_double)
    assert calls == [(_double, 15)]
    assert wrapped(4) == ("on gpu", 8)


def test_gpu_task_without_spaces_package_warns_and_runs_unchanged(monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "spaces", None)  # makes `import spaces` raise ImportError
    monkeypatch.setenv(gpu.ZERO_GPU_ENV, "true")
    with caplog.at_level(logging.WARNING, logger="ui.gpu"):
        assert gpu.gpu_task(15)(_double) is _double
    assert "not importable" in caplog.text


@pytest.mark.parametrize("duration", [0, -5, 2.5, True, "60"])
def test_gpu_task_rejects_bad_durations(duration) -> None:
    with pytest.raises(ValueError, match="whole seconds >= 1"):
        gpu.gpu_task(duration)


def test_explain_duration_depends_on_the_method() -> None:
    # ZeroGPU calls the duration function with the decorated call's arguments.
    assert handlers._explain_gpu_seconds(1, ["a"], "b", method="fast") == handlers.EXPLAIN_GPU_S["fast"]
    assert handlers._explain_gpu_seconds(1, ["a"], "b", method="thorough") == handlers.EXPLAIN_GPU_S["thorough"]
    assert handlers.EXPLAIN_GPU_S["thorough"] > handlers.EXPLAIN_GPU_S["fast"]


def test_gpu_functions_take_and_return_picklable_values(tiny_service, tiny_catalog_dir: Path) -> None:
    """ZeroGPU pickles arguments into a forked worker and results back; domain errors must be gr.Error there."""
    key = handlers._service_key(tiny_service)
    image = str(tiny_catalog_dir / "images" / "chess.png")
    calls = [
        (handlers.gpu_recommend_upload, (key,), {"image": image, "title": "chess", "description": "", "k": 3}),
        (handlers.gpu_explain, (key, ["chess"], "checkers"), {"method": "fast"}),
        (handlers.gpu_explain_upload, (key,), {"image": image, "title": "chess", "description": "",
                                               "item_id": "checkers", "method": "fast"}),
    ]
    for fn, args, kwargs in calls:
        assert pickle.loads(pickle.dumps((args, kwargs))) == (args, kwargs)
        result = fn(*args, **kwargs)
        again = pickle.loads(pickle.dumps(result))
        assert type(again) is type(result)
    recs = handlers.gpu_recommend_upload(key, image=image, title="chess", description="", k=3)
    assert [r.item_id for r in pickle.loads(pickle.dumps(recs))] == [r.item_id for r in recs]
    with pytest.raises(gr.Error, match="no-such-item"):
        handlers.gpu_explain(key, ["chess"], "no-such-item", method="fast")


# -- the app with a Space's environment --------------------------------------------------------------
def _space_env(tmp_path: Path, port: int) -> dict[str, str]:
    """What a Gradio Space with hf_oauth sets, plus the variables our README asks for."""
    env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_SERVER_PORT", "SPACES_ZERO_GPU")}
    env.update({
        "SYSTEM": "spaces", "SPACE_ID": "someone/recommendation-studio", "SPACE_HOST": "someone-studio.hf.space",
        "GRADIO_SERVER_NAME": "0.0.0.0", "PORT": str(port),
        "OAUTH_CLIENT_ID": "test-client", "OAUTH_CLIENT_SECRET": "test-secret", "OAUTH_SCOPES": "openid profile",
        "OPENID_PROVIDER_URL": "https://huggingface.co",
        "DATA_DIR": str(tmp_path / "bucket" / "data"), "BACKUP_DIR": str(tmp_path / "bucket" / "backups"),
        "OAUTH_ADMINS": "alice, bob", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
    })
    return env


def test_config_from_space_environment(monkeypatch, tmp_path: Path) -> None:
    for name, value in _space_env(tmp_path, 7860).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    config = parse_config([])
    assert (config.host, config.port) == ("0.0.0.0", 7860)
    assert config.data_dir == tmp_path / "bucket" / "data"
    assert config.service.cache_dir == tmp_path / "bucket" / "data" / "features"
    assert config.backup is not None and config.backup.folder == tmp_path / "bucket" / "backups"
    assert config.oauth_admins == "alice, bob"
    assert config.auth_file is None


def test_app_starts_like_on_a_space_and_backs_up_at_shutdown(tmp_path: Path) -> None:
    pytest.importorskip("authlib", reason="hf_oauth needs gradio[oauth] (authlib, itsdangerous)")
    port = free_port()
    env = _space_env(tmp_path, port)
    log_path = tmp_path / "app.log"
    # Only the encoders come from flags (tiny ones, for speed); everything else from the environment.
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--text-encoder", "tiny-random", "--image-encoder",
                                 "tiny-random"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        status = wait_until_serving(proc, f"http://127.0.0.1:{port}", log_path, 180)
        assert status == 200
        proc.send_signal(signal.SIGTERM)  # how Spaces stops a Space
        assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "bucket" / "data" / "recsys.sqlite3").is_file()
    backups = sorted(p.name for p in (tmp_path / "bucket" / "backups").iterdir())
    assert [n.rsplit("Z-", 1)[1] for n in backups] == ["labels.csv", "labels.parquet", "recsys.sqlite3"], backups


# -- benchmarks/gpu_check.py ---------------------------------------------------------------------------
def test_gpu_check_refuses_cuda_without_a_gpu_and_says_why() -> None:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1")  # no GPU visible, even on a GPU machine
    result = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cuda"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "--device cuda was asked for but" in result.stderr and "--device cpu" in result.stderr
    assert result.stdout == ""  # no JSON for a check that did not run
