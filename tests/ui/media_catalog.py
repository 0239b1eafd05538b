"""The tiny catalog with audio and video: the tiny games plus generated tones and clips (tests/media_fixtures.py).

Three items have a track (two tones an octave apart and a low one), one of them a silent clip too; one has a clip
with a soundtrack, one a silent clip; the rest have neither, so every test finds an item with each kind of media
and one without. The clips differ in size and length, so their keyframes (and video vectors) differ.
"""

from __future__ import annotations

from pathlib import Path

from recsys_core.config import (AudioEncoderConfig, ImageEncoderConfig, LimitsConfig, ServiceConfig,
                                TextEncoderConfig)
from recsys_core.data.catalog import load_catalog_folder
from recsys_core.encoders.image import ImageEncoder
from recsys_core.encoders.tiny import tiny_image_backbone, tiny_text_encoder
from recsys_core.service import RecommenderService
from tests.conftest import write_tiny_catalog
from tests.media_fixtures import write_clip, write_tone

#: item id -> (audio file, video file, collection) added to the tiny catalog's rows.
MEDIA = {
    "chess": ("media/chess.ogg", "", "Board Album"),
    "cards": ("media/cards.ogg", "", "Board Album"),
    "checkers": ("media/checkers.opus", "media/checkers.webm", "Board Album"),
    "space": ("", "media/space.webm", "Arcade Reel"),
    "racer": ("", "media/racer.webm", "Arcade Reel"),
}
AUDIO_ITEMS = ("chess", "cards", "checkers")  # a track of their own
VIDEO_ITEMS = ("space", "racer", "checkers")  # space's clip has a soundtrack, the others are silent
NO_MEDIA_ITEMS = ("puzzle", "noimage")


def write_media_catalog(folder: Path) -> Path:
    """The tiny catalog in ``folder`` with the media of :data:`MEDIA` (about 0.5 s to write)."""
    write_tiny_catalog(folder)
    (folder / "media").mkdir(exist_ok=True)
    write_tone(folder / "media" / "chess.ogg", 3.0, frequency=440.0)
    write_tone(folder / "media" / "cards.ogg", 3.0, frequency=880.0)
    write_tone(folder / "media" / "checkers.opus", 2.0, frequency=300.0)
    write_clip(folder / "media" / "space.webm", 2.0, fps=8, with_audio=True)
    write_clip(folder / "media" / "racer.webm", 3.0, fps=8, size=(96, 64), with_audio=False)
    write_clip(folder / "media" / "checkers.webm", 2.5, fps=6, size=(48, 48), with_audio=False)
    lines = (folder / "items.csv").read_text(encoding="utf-8").splitlines()
    out = [lines[0] + ",audio,video,collection"]
    for line in lines[1:]:
        audio, video, collection = MEDIA.get(line.split(",", 1)[0], ("", "", ""))
        out.append(f"{line},{audio},{video},{collection}")
    (folder / "items.csv").write_text("\n".join(out) + "\n", encoding="utf-8")
    return folder


def make_media_service(folder: Path, cache_dir: Path | None, limits: LimitsConfig | None = None) -> RecommenderService:
    """The tiny-random service (text, image and audio encoders) on the catalog in ``folder``, prepared."""
    text_cfg = TextEncoderConfig(model="tiny-random", max_length=64, batch_size=4)
    image_cfg = ImageEncoderConfig(model="tiny-random", image_size=64, batch_size=4)
    config = ServiceConfig(text=text_cfg, image=image_cfg, audio=AudioEncoderConfig(model="tiny-random"),
                           device="cpu", cache_dir=cache_dir, limits=limits or LimitsConfig())
    service = RecommenderService(load_catalog_folder(folder), config, text_encoder=tiny_text_encoder(text_cfg),
                                 image_encoder=ImageEncoder(tiny_image_backbone(), image_cfg, "tiny-random"))
    service.prepare()
    return service
