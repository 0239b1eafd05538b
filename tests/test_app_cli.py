"""Command line and environment parsing of ``app.py`` (nothing is built or launched)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import AppConfig, build_parser, launch_kwargs, parse_config
from recsys_core.config import LimitsConfig, ZeroShotConfig
from tests.conftest import REPO_ROOT

ENV_VARS = ("CATALOG", "DATA_ROOT", "DATA_DIR", "DATABASE_URL", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "PORT",
            "DEVICE", "LOG_LEVEL", "MODEL_DIR")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def test_help_mentions_every_main_flag() -> None:
    text = build_parser().format_help()
    for flag in ("--catalog", "--model", "--data-root", "--data-dir", "--host", "--port", "--device", "--database-url",
                 "--text-weight", "--image-weight", "--max-upload-mb"):
        assert flag in text
    assert text.startswith("usage: python app.py")


def test_defaults() -> None:
    config = parse_config([])
    assert config.catalog == "demo"
    assert config.data_root is None
    assert config.data_dir == Path("data")
    assert config.database_url is None
    assert (config.host, config.port, config.log_level) == ("127.0.0.1", 7860, "INFO")
    assert config.service.device == "auto"
    assert config.service.cache_dir == Path("data") / "features"
    assert (config.service.text.model, config.service.image.model) == ("minilm", "efficientnet-lite0")
    assert config.service.zeroshot == ZeroShotConfig()  # the defaults live in one place
    assert config.service.limits == LimitsConfig()


def test_flags_are_mapped(tmp_path: Path) -> None:
    config = parse_config([
        "--catalog", "movielens-100k", "--data-root", str(tmp_path / "ml"), "--data-dir", str(tmp_path / "d"),
        "--database-url", "sqlite://", "--host", "0.0.0.0", "--port", "9000", "--device", "cpu",
        "--text-encoder", "tiny-random", "--image-encoder", "tiny-random", "--text-weight", "1", "--image-weight", "0",
        "--max-upload-mb", "2", "--log-level", "DEBUG",
    ])
    assert config.catalog == "movielens-100k"
    assert config.data_root == tmp_path / "ml"
    assert config.data_dir == tmp_path / "d"
    assert config.database_url == "sqlite://"
    assert (config.host, config.port, config.log_level) == ("0.0.0.0", 9000, "DEBUG")
    assert config.service.device == "cpu"
    assert config.service.cache_dir == tmp_path / "d" / "features"
    assert (config.service.text.model, config.service.image.model) == ("tiny-random", "tiny-random")
    assert (config.service.zeroshot.text_weight, config.service.zeroshot.image_weight) == (1.0, 0.0)
    assert config.service.limits.max_upload_bytes == 2 * 1024 * 1024


def test_environment_is_mapped(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("CATALOG", "movielens-100k")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///x.db")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("PORT", "8080")
    monkeypatch.setenv("DEVICE", "cpu")
    config = parse_config([])
    assert config.data_dir == tmp_path / "env-data"
    assert config.service.cache_dir == tmp_path / "env-data" / "features"
    assert config.data_root == tmp_path / "root"  # argparse applies type=Path to the string default
    assert config.catalog == "movielens-100k"
    assert config.database_url == "sqlite:///x.db"
    assert (config.host, config.port, config.service.device) == ("0.0.0.0", 8080, "cpu")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7000")  # wins over PORT
    assert parse_config([]).port == 7000
    assert parse_config(["--data-dir", str(tmp_path / "flag")]).data_dir == tmp_path / "flag"  # flag wins


def test_data_dir_expands_user(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_config(["--data-dir", "~/studio"]).data_dir == tmp_path / "studio"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--text-weight", "-0.5"], "modality weights must be >= 0"),
        (["--text-weight", "0", "--image-weight", "0", "--audio-weight", "0", "--video-weight", "0"],
         "at least one modality weight must be > 0"),
        (["--port", "70000"], "port is 70000; allowed 0..65535"),
        (["--max-upload-mb", "0"], "max_upload_bytes must be >= 1"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
        (["--port", "eighty"], "invalid int value: 'eighty'"),
        (["--log-level", "TRACE"], "invalid choice: 'TRACE'"),
        (["--model", "/no/such/checkpoint"], "--model /no/such/checkpoint: not a checkpoint folder"),
    ],
)
def test_bad_values_exit_with_usage_error(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        parse_config(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python app.py")
    assert message in err


def test_launch_kwargs(tiny_service) -> None:
    config = AppConfig(port=1234, host="0.0.0.0")
    kwargs = launch_kwargs(config, tiny_service)
    assert kwargs["server_name"] == "0.0.0.0" and kwargs["server_port"] == 1234
    assert kwargs["max_file_size"] == config.service.limits.max_upload_bytes
    from ui.render import NO_IMAGE

    # The catalog's images, the placeholder for image-less items and label exports, nothing else.
    assert kwargs["allowed_paths"] == [str(tiny_service.catalog.root.resolve()), str(NO_IMAGE.parent),
                                       str((config.data_dir / "exports").resolve())]
    assert "auth" not in kwargs  # open mode: no login form


def test_launch_kwargs_with_accounts(tiny_service, tmp_path) -> None:
    from ui.access import Access

    users = tmp_path / "users.csv"
    users.write_text("username,password,role\nann,pw1,annotator\nboss,pw2,admin\n")
    access = Access.from_options(users, None)
    kwargs = launch_kwargs(AppConfig(), tiny_service, access)
    assert kwargs["auth"]("boss", "pw2") is True
    assert kwargs["auth"]("boss", "wrong") is False and kwargs["auth"]("nobody", "pw2") is False


def test_app_config_rejects_bad_port() -> None:
    with pytest.raises(ValueError, match="port is -1"):
        AppConfig(port=-1)


def test_help_in_a_subprocess() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    done = subprocess.run([sys.executable, "app.py", "--help"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python app.py")
    assert "--catalog" in done.stdout and "--data-dir" in done.stdout
    assert done.stderr == ""


def test_model_flag_and_env(monkeypatch, tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    assert parse_config(["--model", str(folder)]).service.model_dir == folder
    monkeypatch.setenv("MODEL_DIR", str(folder))
    assert parse_config([]).service.model_dir == folder
    assert parse_config(["--model", ""]).service.model_dir is None  # an empty value means zero-shot


def test_index_kind_flag_and_env(monkeypatch) -> None:
    from app import parse_config

    assert parse_config([]).service.index.kind == "auto"
    assert parse_config(["--index", "faiss"]).service.index.kind == "faiss"
    monkeypatch.setenv("INDEX_KIND", "exact")
    assert parse_config([]).service.index.kind == "exact"


def test_a_bad_number_in_the_environment_is_a_usage_error(monkeypatch, capsys) -> None:
    from app import parse_config

    monkeypatch.setenv("MAX_UPLOAD_MB", "ten")
    with pytest.raises(SystemExit) as info:
        parse_config([])
    assert info.value.code == 2 and "invalid float value: 'ten'" in capsys.readouterr().err


def test_finetune_epochs_reach_the_job_options(monkeypatch, capsys) -> None:
    from studio.finetune_job import JobOptions

    assert parse_config([]).finetune == JobOptions()  # unset: the job's own defaults
    assert parse_config(["--finetune-epochs", "3"]).finetune == JobOptions(epochs=3)
    monkeypatch.setenv("FINETUNE_EPOCHS", "4")
    assert parse_config([]).finetune.epochs == 4
    with pytest.raises(SystemExit):
        parse_config(["--finetune-epochs", "0"])
    assert "fine-tune option epochs is 0" in capsys.readouterr().err


def test_a_preparation_that_fails_after_launch_stops_the_app_with_a_clear_message(tmp_path: Path) -> None:
    from tests.app_process import free_port

    folder = tmp_path / "ckpt"  # passes the --model check (both files exist) but cannot be loaded
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    env = dict({k: v for k, v in os.environ.items() if k not in ENV_VARS}, HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "app.py", "--text-encoder", "tiny-random", "--image-encoder", "tiny-random",
                           "--data-dir", str(tmp_path / "data"), "--port", str(free_port()), "--model", str(folder)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "the page is up at http://127.0.0.1:" in done.stderr  # launched first, then prepared
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: checkpoint {folder} cannot be loaded"), done.stderr[-2000:]
    assert "Traceback" not in done.stderr
