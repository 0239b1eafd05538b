"""The catalog and encoder flags every command takes, declared once, and turned back into argv.

``app.py``, ``python -m recsys_core.train``, ``python -m studio.finetune_job`` and
``python -m recsys_core.evaluate`` declare them with :func:`add_catalog_arguments` (each may change a
default or a help text, e.g. to read an environment variable); a process that starts another one
with the same catalog and encoders passes :meth:`CatalogArgs.to_argv`. Importing this loads nothing heavy.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from recsys_core.config import DEVICES

# attribute -> (flag, add_argument keywords). The order here is the order of the flags in --help and in argv.
CATALOG_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "catalog": ("--catalog", {"default": "demo",
                              "help": "'demo' (bundled Debian games), 'movielens-100k' (needs --data-root), or a folder "
                                      "with items.csv/items.jsonl in the generic format (see README)"}),
    "data_root": ("--data-root", {"type": Path, "default": None,
                                  "help": "where a named dataset lives, e.g. ../shared/data/movielens-100k"}),
    "data_dir": ("--data-dir", {"type": Path, "default": Path("data"), "help": "feature cache in <data-dir>/features"}),
    "text_encoder": ("--text-encoder", {"default": "minilm",
                                        "help": "'minilm' (packaged all-MiniLM-L6-v2), 'tiny-random' (tests), a local "
                                                "model folder or a hub id"}),
    "image_encoder": ("--image-encoder", {"default": "efficientnet-lite0",
                                          "help": "'efficientnet-lite0' (packaged), 'tiny-random' (tests), or a timm "
                                                  "model name"}),
    "audio_encoder": ("--audio-encoder", {"default": "aisfx",
                                          "help": "'aisfx' (packaged, for catalogs with audio or video soundtracks) or "
                                                  "'tiny-random' (tests)"}),
    "device": ("--device", {"choices": DEVICES, "default": "auto",
                            "help": "where encoders run: auto = CUDA if available, else CPU"}),
    "max_audio_seconds": ("--max-audio-seconds", {"type": float, "default": 600.0,
                                                  "help": "longest audio accepted (catalog tracks and uploads); a longer "
                                                          "catalog track is listed and kept without its audio"}),
    "max_video_seconds": ("--max-video-seconds", {"type": float, "default": 300.0,
                                                  "help": "longest video accepted (catalog clips and uploads)"}),
}


def add_catalog_arguments(parser: argparse.ArgumentParser, *, only: Sequence[str] = tuple(CATALOG_FLAGS),
                          defaults: Mapping[str, Any] | None = None, helps: Mapping[str, str] | None = None,
                          required: Sequence[str] = ()) -> None:
    """Add the flags named in ``only`` (attribute names, e.g. ``"data_root"``) to ``parser``.

    ``defaults``/``helps`` replace a flag's default or help text; a flag in ``required`` has no default.
    """
    unknown = set(only) | set(defaults or {}) | set(helps or {}) | set(required)
    unknown -= set(CATALOG_FLAGS)
    if unknown:
        raise ValueError(f"unknown catalog flag(s) {sorted(unknown)}; known: {', '.join(CATALOG_FLAGS)}")
    for name, (flag, options) in CATALOG_FLAGS.items():
        if name not in only:
            continue
        options = dict(options)
        if defaults and name in defaults:
            options["default"] = defaults[name]
        if helps and name in helps:
            options["help"] = helps[name]
        if name in required:
            options.pop("default")
            options["required"] = True
        parser.add_argument(flag, **options)


@dataclass(frozen=True)
class CatalogArgs:
    """The parsed catalog/encoder values (None = not given, so not passed on)."""

    catalog: str | None = None
    data_root: Path | str | None = None
    data_dir: Path | str | None = None
    text_encoder: str | None = None
    image_encoder: str | None = None
    audio_encoder: str | None = None
    device: str | None = None
    max_audio_seconds: float | None = None
    max_video_seconds: float | None = None

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> "CatalogArgs":
        return cls(**{f.name: getattr(args, f.name, None) for f in fields(cls)})

    def media_limits(self):
        """The audio/video limits these flags ask for (``recsys_core.data.media.MediaLimits``; defaults where unset)."""
        from recsys_core.data.media import MediaLimits

        given = {name: float(getattr(self, name)) for name in ("max_audio_seconds", "max_video_seconds")
                 if getattr(self, name) is not None}
        return MediaLimits(**given)

    def to_argv(self) -> list[str]:
        """The flags that rebuild the same catalog, encoders and feature cache in another process."""
        argv: list[str] = []
        for name, (flag, _) in CATALOG_FLAGS.items():
            value = getattr(self, name)
            if value is not None:
                argv += [flag, str(value)]
        return argv
