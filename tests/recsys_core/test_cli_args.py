"""The shared catalog/encoder flags: declared once, and what a child process gets back parses to the same values."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from recsys_core.cli_args import CATALOG_FLAGS, CatalogArgs, add_catalog_arguments


def test_parsed_values_round_trip_through_argv(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_catalog_arguments(parser)
    given = ["--catalog", "movielens-100k", "--data-root", str(tmp_path / "ml"), "--data-dir", str(tmp_path / "d"),
             "--text-encoder", "tiny-random", "--image-encoder", "tiny-random", "--device", "cpu"]
    values = CatalogArgs.from_namespace(parser.parse_args(given))
    assert values == CatalogArgs("movielens-100k", tmp_path / "ml", tmp_path / "d", "tiny-random", "tiny-random",
                                 "aisfx", "cpu", 600.0, 300.0)  # the media limits' defaults travel too
    assert CatalogArgs.from_namespace(parser.parse_args(values.to_argv())) == values
    assert CatalogArgs(catalog="demo", device="cpu").to_argv() == ["--catalog", "demo", "--device", "cpu"]


def test_defaults_helps_required_and_subsets() -> None:
    parser = argparse.ArgumentParser()
    add_catalog_arguments(parser, only=("data_root", "device"), required=("data_root",),
                          defaults={"device": "cpu"}, helps={"data_root": "where the ratings are"})
    assert "where the ratings are" in parser.format_help() and "--text-encoder" not in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args([])
    args = parser.parse_args(["--data-root", "x"])
    assert (args.data_root, args.device) == (Path("x"), "cpu")
    with pytest.raises(ValueError, match="unknown catalog flag"):
        add_catalog_arguments(argparse.ArgumentParser(), only=("catalgo",))
    assert list(CATALOG_FLAGS) == ["catalog", "data_root", "data_dir", "text_encoder", "image_encoder",
                                   "audio_encoder", "device", "max_audio_seconds", "max_video_seconds"]


def test_media_limits_come_from_the_flags() -> None:
    limits = CatalogArgs(max_audio_seconds=30.0).media_limits()
    assert (limits.max_audio_seconds, limits.max_video_seconds) == (30.0, 300.0)
