"""Audio and video in the UI and the API (issue 16): uploads, players, the audio plot and the keyframe strip.

All on the tiny catalog with generated tones and clips (tests/ui/media_catalog.py) and tiny random encoders.
"""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from recsys_core.serving.explain_media import FrameAttribution, SegmentAttribution
from storage import Repository
from tests.media_fixtures import write_tone
from tests.studio_app import req
from tests.ui.media_catalog import NO_MEDIA_ITEMS
from ui import media, render
from ui.handlers import Handlers
from ui.layout import build_demo

NO_PROGRESS = {"progress": lambda *a, **k: None}
SUMMARY, AUDIO_PLOT, STRIP = 5, 6, 7  # in Handlers.explain_panel's values on the Recommend tab
# On the Upload tab the query heatmap comes first (6), then the item's two and the upload's two.
UP_TAB_AUDIO_PLOT, UP_TAB_STRIP, UP_AUDIO_PLOT, UP_STRIP = 7, 8, 9, 10


@pytest.fixture
def handlers(media_service) -> Handlers:
    return Handlers(media_service, Repository.from_url("sqlite://"))


def _clip(media_catalog_dir: Path, item_id: str) -> str:
    return str(next((media_catalog_dir / "media").glob(f"{item_id}.*")))


def _equation(summary: str) -> tuple[float, dict[str, float]]:
    """(score, {part: value}) of the summary's first line "Score **s** = text t + image i + audio a ..."."""
    line = summary.split("\n\n")[0].replace("\u2212", "-")
    score = float(re.search(r"Score \*\*(-?\d+\.\d+)\*\*", line).group(1))
    terms = re.findall(r"([a-zA-Z &]+?) (-?\d+\.\d{3})", line.split("=", 1)[1].split("(")[0])
    return score, {name.strip(): float(value) for name, value in terms}


# -- API ---------------------------------------------------------------------------------------------------------


def test_recommend_upload_takes_an_audio_clip_and_old_callers_keep_working(handlers, media_service,
                                                                           media_catalog_dir) -> None:
    clip = _clip(media_catalog_dir, "cards")
    out = handlers.api_recommend_upload(None, "", "", 3, None, audio={"path": clip})
    expected = media_service.recommend_for_upload(image=None, audio=clip, k=3)
    assert [r["item_id"] for r in out] == [r.item_id for r in expected]
    # Its own track: cosine 1, times the audio weight, is the whole score.
    weight = media_service.zeroshot_model.weights["audio"]
    assert out[0]["item_id"] == "cards" and out[0]["score"] == pytest.approx(weight, abs=1e-4)
    assert all(set(r) == {"item_id", "title", "score", "rank"} for r in out)
    assert handlers.repository.count_impressions() == 3
    # The parameters old clients send, in their order; audio and video come after them.
    by_text = handlers.api_recommend_upload(None, "Chess Master", "board game", 2)
    assert len(by_text) == 2
    video = handlers.api_recommend_upload(None, "", "", 2, None, video={"path": _clip(media_catalog_dir, "racer")})
    assert video[0]["item_id"] == "racer"  # a clip finds the item it came from


def test_explain_splits_the_audio_part_over_segments_and_the_video_part_over_keyframes(handlers) -> None:
    out = handlers.api_explain(["chess"], "cards", "fast")
    parts = out["score_parts"]
    assert set(parts) == {"text", "image", "audio", "video", "collaborative", "item"}
    assert sum(parts.values()) == pytest.approx(out["score"], abs=1e-5)
    assert len(out["audio_segments"]) >= 2 and parts["audio"] != 0
    assert sum(s["attribution"] for s in out["audio_segments"]) == pytest.approx(parts["audio"], abs=1e-4)
    assert all(s["end_s"] > s["start_s"] >= 0 for s in out["audio_segments"])
    assert out["video_frames"] == [] and out["upload_audio_segments"] == []  # cards has no clip; no upload
    clip = handlers.api_explain(["checkers"], "racer", "thorough")
    frames = clip["video_frames"]
    assert len(frames) >= 2 and clip["score_parts"]["video"] != 0
    assert sum(f["attribution"] for f in frames) == pytest.approx(clip["score_parts"]["video"], abs=1e-4)
    assert sum(1 for f in frames if f["heatmap"]) == 1  # the top keyframe's regions only
    top = max(frames, key=lambda f: abs(f["attribution"]))
    assert top["heatmap"] and all(0.0 <= v <= 1.0 for row in top["heatmap"] for v in row)
    assert clip["audio_segments"] == []  # racer's clip is silent


def test_explain_upload_says_which_seconds_of_the_clip_matched(handlers, media_catalog_dir) -> None:
    clip = _clip(media_catalog_dir, "chess")
    out = handlers.api_explain_upload(None, "", "", "cards", "fast", audio={"path": clip})
    segments = out["upload_audio_segments"]
    assert segments and out["audio_segments"]
    assert sum(s["attribution"] for s in segments) == pytest.approx(out["score_parts"]["audio"], abs=1e-4)
    assert out["score"] == pytest.approx(out["score_parts"]["audio"], abs=1e-5)  # a clip alone: all audio


@pytest.mark.parametrize("name, content, message", [
    ("notes.ogg", b"hello, I am text", "notes.ogg"),
    ("clip.txt", b"hello", "clip.txt"),
])
def test_a_bad_audio_upload_gets_its_reason_not_a_traceback(handlers, tmp_path, name, content, message) -> None:
    bad = tmp_path / name
    bad.write_bytes(content)
    with pytest.raises(gr.Error) as info:
        handlers.api_recommend_upload(None, "", "", 3, None, audio={"path": str(bad)})
    text = info.value.message
    assert message in text and "Something went wrong" not in text and "Traceback" not in text
    # The Upload tab: the same reason in its status line, the results as they were.
    values = handlers.recommend_upload(None, "", "", 3, req("ann1"), audio=str(bad))
    assert message in values[-1] and values[-1].startswith("⚠")
    assert all(v is gr.skip() or isinstance(v, dict) and v.get("__type__") == "update" for v in values[:-1])


def test_a_too_long_clip_is_refused_with_both_numbers(tmp_path, media_catalog_dir) -> None:
    from recsys_core.config import LimitsConfig
    from tests.ui.media_catalog import make_media_service

    service = make_media_service(media_catalog_dir, tmp_path / "features", LimitsConfig(max_audio_seconds=4))
    long = write_tone(tmp_path / "long.ogg", 6.0)
    with pytest.raises(gr.Error) as info:
        Handlers(service, Repository.from_url("sqlite://")).api_recommend_upload(None, "", "", 3, None,
                                                                                audio={"path": str(long)})
    message = info.value.message
    assert "long.ogg" in message and "4" in message and "--max-audio-seconds" in message


def test_a_clip_on_a_catalog_without_audio_says_why_it_matches_nothing(tiny_service, media_catalog_dir) -> None:
    handlers = Handlers(tiny_service, Repository.from_url("sqlite://"))
    with pytest.raises(gr.Error) as info:
        handlers.api_recommend_upload(None, "", "", 3, None, audio={"path": _clip(media_catalog_dir, "chess")})
    assert "has no audio" in info.value.message


# -- the results panel ------------------------------------------------------------------------------------------


def test_players_follow_the_selection_and_hide_without_media(handlers, media_service) -> None:
    audio, video = handlers.item_media({"selected": "chess"})
    assert audio.visible and audio.value["path"].endswith("chess.ogg") and not video.visible
    audio, video = handlers.item_media({"selected": "checkers"})  # a track and a silent clip: both
    assert audio.visible and video.visible and video.value["path"].endswith("checkers.webm")
    for item_id in NO_MEDIA_ITEMS:
        audio, video = handlers.item_media({"selected": item_id})
        assert not audio.visible and not video.visible and audio.value is None and video.value is None
    audio, video = handlers.item_media({"selected": None, "results": ["chess"]})  # a new list: nothing selected
    assert not audio.visible and not video.visible
    audio, video = media.players(media_service.item("space"))  # its soundtrack plays in the video player
    assert not audio.visible and video.visible


def test_result_captions_and_details_mark_and_name_the_media(handlers, media_service) -> None:
    recs = media_service.recommend(["chess"], 6)
    captions = {r.item_id: caption for r, (_, caption) in zip(recs, render.results_gallery(recs))}
    assert render.AUDIO_MARK in captions["cards"] and render.VIDEO_MARK not in captions["cards"]
    assert render.AUDIO_MARK + render.VIDEO_MARK in captions["checkers"]
    assert render.AUDIO_MARK not in captions["puzzle"] and render.VIDEO_MARK not in captions["puzzle"]
    details = render.item_details(media_service.item("cards"), next(r for r in recs if r.item_id == "cards"))
    assert "**Collection:** Board Album" in details and "Audio (players below)" in details
    score, terms = _equation("Score " + details.split("\n\n")[1].split("score ", 1)[1])
    assert "audio" in terms and score == pytest.approx(sum(terms.values()), abs=2e-3)


def test_the_results_table_and_chart_add_up_with_the_audio_and_video_parts(media_service) -> None:
    recs = media_service.recommend(["checkers"], 6)
    headers = render.results_headers(recs)
    assert headers[:7] == ["rank", "title", "score", "text part", "image part", "audio part", "video part"]
    for row in render.results_table(recs):
        assert row[2] == pytest.approx(sum(row[3:7]), abs=3e-4)
    frame = render.score_parts_frame(recs)
    assert {"audio", "video"} <= set(frame["part"])
    assert frame.groupby("item", sort=False)["score"].sum().tolist() == pytest.approx([r.score for r in recs], abs=3e-4)


def test_the_explanation_draws_the_audio_and_its_equation_adds_up(handlers) -> None:
    values = handlers.explain_panel({"liked": ["chess"], "selected": "cards"}, "fast", **NO_PROGRESS)
    assert len(values) == 8
    score, terms = _equation(values[SUMMARY])
    assert set(terms) == {"text", "image", "audio"} and score == pytest.approx(sum(terms.values()), abs=1e-9)
    assert f"Audio part {render.num(terms['audio'])}" in values[SUMMARY]  # as the equation prints it
    plot, strip = values[AUDIO_PLOT], values[STRIP]
    assert plot.visible and isinstance(plot.value, dict) and plot.value["path"]  # a picture, served as a file
    assert not strip.visible  # cards has no clip
    # The classic panel values are unchanged for their callers: 6, the summary last.
    assert handlers.explain({"liked": ["chess"], "selected": "cards"}, "fast", **NO_PROGRESS)[-1] == values[SUMMARY]


def test_the_explanation_draws_the_keyframes_of_a_clip(handlers) -> None:
    values = handlers.explain_panel({"liked": ["checkers"], "selected": "racer"}, "fast", **NO_PROGRESS)
    score, terms = _equation(values[SUMMARY])
    assert "video" in terms and score == pytest.approx(sum(terms.values()), abs=1e-9)
    plot, strip = values[AUDIO_PLOT], values[STRIP]
    assert strip.visible and not plot.visible  # racer's clip is silent
    captions = [entry["caption"] for entry in strip.value]
    assert len(captions) >= 2 and sum(c.startswith(media.TOP_FRAME_MARK) for c in captions) == 1
    assert all(re.fullmatch(r"(\u2605 )?\d+\.\d s · [+\u2212]\d\.\d{3}", c) for c in captions)
    assert strip.columns == media.STRIP_COLUMNS and strip.height >= media.STRIP_ROW_PX  # every frame in view
    quiet = handlers.explain_panel({"liked": ["puzzle"], "selected": "noimage"}, "fast", **NO_PROGRESS)
    assert not quiet[AUDIO_PLOT].visible and not quiet[STRIP].visible  # nothing to draw: hidden
    # checkers has a track, but racer (the profile) has none: its audio counts for nothing, so it is not drawn
    # and not talked about; the two clips are compared.
    silent = handlers.explain_panel({"liked": ["racer"], "selected": "checkers"}, "fast", **NO_PROGRESS)
    assert not silent[AUDIO_PLOT].visible and silent[STRIP].visible
    assert "Audio part" not in silent[SUMMARY] and "Video part" in silent[SUMMARY]


def test_an_upload_explanation_shows_which_seconds_of_the_clip_matched(handlers, media_catalog_dir) -> None:
    clip = _clip(media_catalog_dir, "chess")
    values = handlers.recommend_upload(None, "", "", 3, req("u"), audio=clip)
    state = dict(values[3], selected="cards")
    assert state["upload"]["audio"] == clip
    explained = handlers.explain_panel(state, "fast", **NO_PROGRESS)
    assert len(explained) == 11
    assert explained[UP_AUDIO_PLOT].visible and explained[UP_TAB_AUDIO_PLOT].visible
    assert not explained[UP_STRIP].visible and not explained[UP_TAB_STRIP].visible
    assert "Of your clip's sound" in explained[SUMMARY]


def test_an_uploaded_clip_gets_its_own_keyframe_strip(handlers, media_catalog_dir) -> None:
    clip = _clip(media_catalog_dir, "racer")
    values = handlers.recommend_upload(None, "", "", 3, req("u"), video=clip)
    assert values[-1].startswith("3 catalog items") and values[3]["upload"]["video"] == clip
    explained = handlers.explain_panel(dict(values[3], selected="checkers"), "fast", **NO_PROGRESS)
    strip = explained[UP_STRIP]
    assert strip.visible and explained[UP_TAB_STRIP].visible and not explained[UP_AUDIO_PLOT].visible  # silent
    assert sum(entry["caption"].startswith(media.TOP_FRAME_MARK) for entry in strip.value) == 1
    assert "Of your clip's keyframes" in explained[SUMMARY]


def test_a_new_query_hides_the_previous_explanations_media(handlers) -> None:
    from ui.panels import results_panel

    with gr.Blocks():
        panel = results_panel(label="Recommendations", rating=True)
    values = dict(zip(map(id, panel.shown), handlers.recommend(["chess"], 3, req("s"))))
    for component in panel.media:
        assert values[id(component)].visible is False and not values[id(component)].value


# -- drawing -----------------------------------------------------------------------------------------------------


def test_the_audio_plot_is_a_picture_with_or_without_the_waveform() -> None:
    import numpy as np

    segments = [SegmentAttribution(0.0, 2.32, 0.3), SegmentAttribution(1.16, 3.48, -0.1)]
    samples = np.sin(np.linspace(0, 600, media.DISPLAY_RATE * 3)).astype("float32") * 0.5
    image = media.audio_attribution_image(samples, segments, part=0.2, title="t")
    assert isinstance(image, Image.Image) and image.size == (640, 360)
    pixels = set(image.convert("RGB").getdata())
    assert (220, 38, 38) in pixels and (37, 99, 235) in pixels  # red raised, blue lowered: both drawn
    assert media.audio_attribution_image(None, segments, part=0.2, title="t").size == (640, 360)


def test_the_keyframe_strip_marks_the_top_frame_and_survives_a_missing_clip() -> None:
    import numpy as np

    heat = np.zeros((7, 7))
    heat[3, 3] = 1.0
    attributions = [FrameAttribution(0.5, 0.2, heat), FrameAttribution(1.5, -0.05)]
    frames = [(0.4, Image.new("RGB", (64, 48), "gray")), (1.6, Image.new("RGB", (64, 48), "black"))]
    strip = media.keyframe_strip(frames, attributions)
    assert [c for _, c in strip] == ["\u2605 0.5 s · +0.200", "1.5 s · \u22120.050"]
    assert all(isinstance(tile, Image.Image) and tile.width == media.FRAME_SIDE for tile, _ in strip)
    assert len(media.keyframe_strip([], attributions)) == 2  # no frames decoded: blank tiles, same numbers


def test_a_broken_track_is_drawn_without_its_waveform(tmp_path, media_service) -> None:
    bad = tmp_path / "gone.ogg"
    bad.write_bytes(b"not audio")
    assert media.waveform(bad, limits=media_service.media_limits) is None
    assert media.catalog_waveform(tmp_path / "missing.ogg", limits=media_service.media_limits) is None


# -- layout: the Upload tab --------------------------------------------------------------------------------------


def test_the_upload_tab_offers_audio_and_video_where_the_catalog_has_them(handlers, tiny_service) -> None:
    demo = build_demo(handlers)
    upload = next(fn for fn in demo.fns.values() if fn.api_name == "ui_upload")
    kinds = [type(c) for c in upload.inputs]
    assert kinds[4:] == [gr.Audio, gr.Video]
    audio, video = upload.inputs[4:]
    assert audio.type == "filepath" and audio.sources == ["upload"] and audio.visible and video.visible
    assert video.sources == ["upload"] and video.include_audio
    plain = build_demo(Handlers(tiny_service, Repository.from_url("sqlite://")))  # no audio, no video: hidden
    audio, video = next(fn for fn in plain.fns.values() if fn.api_name == "ui_upload").inputs[4:]
    assert not audio.visible and not video.visible
    api = {fn.api_name: fn for fn in demo.fns.values()}
    names = [p["parameter_name"] for p in demo.get_api_info()["named_endpoints"]["/recommend_upload"]["parameters"]]
    assert names == ["image", "title", "description", "k", "audio", "video"]
    names = [p["parameter_name"] for p in demo.get_api_info()["named_endpoints"]["/explain_upload"]["parameters"]]
    assert names == ["image", "title", "description", "item_id", "method", "audio", "video"]
    assert "ui_players" in api and "ui_upload_players" in api
