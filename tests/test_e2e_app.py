"""End to end: start ``python app.py`` as a user would and drive it through its API with gradio_client."""

from __future__ import annotations

import urllib.request
import uuid
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from storage import Repository, default_database_url
from tests.app_process import running
from tests.conftest import REPO_ROOT
from tests.media_fixtures import write_tone
from tests.ui.media_catalog import write_media_catalog

BOARD_PROFILE = ["org.gnome.Mahjongg", "org.kde.kmahjongg", "pychess", "org.gnome.Reversi"]


@pytest.fixture(scope="module")
def running_app(real_service, real_data_dir: Path):
    """The app on the real weights; features come from the cache that ``real_service`` filled."""
    with running(["--data-dir", str(real_data_dir), "--device", "cpu"], real_data_dir / "app.log") as url:
        yield url, Client(url, verbose=False)


def _error_of(client: Client, *args, api_name: str) -> str:
    with pytest.raises(Exception) as info:
        client.predict(*args, api_name=api_name)
    return str(info.value)


def test_api_end_to_end(running_app, real_data_dir: Path) -> None:
    url, client = running_app
    repo = Repository.from_url(default_database_url(real_data_dir))
    feedback_before, impressions_before = repo.count_feedback(), repo.count_impressions()

    recs = client.predict(BOARD_PROFILE, 10, api_name="/recommend")
    assert [r["rank"] for r in recs] == list(range(1, 11))
    assert set(recs[0]) == {"item_id", "title", "score", "rank"}
    assert not {r["item_id"] for r in recs} & set(BOARD_PROFILE)
    assert all(recs[i]["score"] >= recs[i + 1]["score"] for i in range(9))
    assert repo.count_impressions() == impressions_before + 10

    similar = client.predict(None, "Chess", "Play chess against the computer.", 5, api_name="/recommend_upload")
    assert len(similar) == 5 and any("chess" in r["item_id"].lower() for r in similar)
    icon = REPO_ROOT / "assets" / "catalog" / "images" / "icons" / "pychess.png"
    by_image = client.predict(handle_file(str(icon)), "", "", 3, api_name="/recommend_upload")
    assert by_image[0]["item_id"] == "pychess"

    request_id = uuid.uuid4().hex
    first = client.predict(BOARD_PROFILE, recs[0]["item_id"], "like", request_id, api_name="/feedback")
    again = client.predict(BOARD_PROFILE, recs[0]["item_id"], "like", request_id, api_name="/feedback")
    assert first["stored"] is True and again == {"stored": False, "feedback_id": first["feedback_id"]}
    other = client.predict(BOARD_PROFILE, recs[1]["item_id"], "dislike", uuid.uuid4().hex, api_name="/feedback")
    assert other["stored"] is True
    assert repo.count_feedback() == feedback_before + 2
    stored = repo.list_feedback(limit=2)
    assert {(f.item_id, f.label) for f in stored} == {(recs[0]["item_id"], "like"), (recs[1]["item_id"], "dislike")}
    assert stored[0].context_ids == BOARD_PROFILE


def test_api_bad_input_gets_clear_errors_and_stores_nothing(running_app, real_data_dir: Path, tmp_path: Path) -> None:
    url, client = running_app
    repo = Repository.from_url(default_database_url(real_data_dir))
    before = repo.count_feedback()
    assert "unknown item" in _error_of(client, BOARD_PROFILE, "no-such-game", "like", "x1", api_name="/feedback")
    assert "not allowed" in _error_of(client, BOARD_PROFILE, "pychess", "love", "x2", api_name="/feedback")
    assert "no liked items" in _error_of(client, [], 5, api_name="/recommend")
    assert "unknown item" in _error_of(client, ["nope"], 5, api_name="/recommend")
    fake = tmp_path / "not-an-image.png"
    fake.write_text("hello")
    assert "could not be read as an image" in _error_of(client, handle_file(str(fake)), "", "", 5,
                                                        api_name="/recommend_upload")
    assert repo.count_feedback() == before


def test_first_page_serves_the_catalog(running_app) -> None:
    url, _ = running_app
    with urllib.request.urlopen(url + "/", timeout=10) as response:
        page = response.read().decode("utf-8", "replace")
    assert "Multimodal Recommendation Studio" in page


def test_explain_endpoint(running_app) -> None:
    url, client = running_app
    recs = client.predict(BOARD_PROFILE, 3, api_name="/recommend")
    result = client.predict(BOARD_PROFILE, recs[0]["item_id"], "fast", api_name="/explain")
    assert result["item_id"] == recs[0]["item_id"] and result["method"] == "fast"
    assert abs(result["score"] - recs[0]["score"]) < 1e-4
    words = [w for w, _ in result["tokens"]]
    assert words and not {"[CLS]", "[SEP]", "[PAD]"} & set(words)
    heat = result["image_heatmap"]
    assert len(heat) > 1 and len({len(row) for row in heat}) == 1
    assert all(0.0 <= v <= 1.0 for row in heat for v in row)
    assert abs(sum(abs(v) for v in result["modality_share"].values()) - 1.0) < 1e-5  # signed shares
    assert [h["item_id"] for h in result["history"]] == BOARD_PROFILE
    assert isinstance(result["delta"], float) and result["model_version"].startswith("zeroshot-")
    # The board-game words of a mahjongg-like item carry the most positive attribution.
    top = max(result["tokens"], key=lambda t: t[1])[0].lower()
    assert top in recs[0]["title"].lower() or top in {"mahjongg", "mahjong", "tiles", "tile", "board", "solitaire"}
    assert "not allowed" in _error_of(client, BOARD_PROFILE, recs[0]["item_id"], "slow", api_name="/explain")


def test_script_endpoints_search_item_similar_explain_upload(running_app) -> None:
    url, client = running_app
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    public = {"/recommend", "/recommend_upload", "/feedback", "/explain", "/search", "/item", "/similar",
              "/explain_upload"}
    assert public <= set(api)
    found = client.predict("chess", "", 5, api_name="/search")
    assert "pychess" in {r["item_id"] for r in found}
    item = client.predict("pychess", api_name="/item")
    assert item["item_id"] == "pychess" and item["has_image"] is True and item["license"]
    similar = client.predict("pychess", 5, api_name="/similar")
    assert len(similar) == 5 and "pychess" not in {r["item_id"] for r in similar}
    explained = client.predict(None, "Chess", "Play chess against the computer.", similar[0]["item_id"], "fast",
                               api_name="/explain_upload")
    assert explained["item_id"] == similar[0]["item_id"] and explained["tokens"]


def test_a_like_changes_the_very_next_recommend(running_app) -> None:
    """Likes at serving time: the first result, added to liked_ids, is gone from the very next list, which
    is another list (the profile moved), not the old one less an item."""
    url, client = running_app
    first = client.predict(BOARD_PROFILE, 10, api_name="/recommend")
    liked = first[0]["item_id"]
    after = client.predict(BOARD_PROFILE + [liked], 10, api_name="/recommend")
    assert len(after) == 10 and liked not in {r["item_id"] for r in after}
    assert [r["item_id"] for r in after] != [r["item_id"] for r in first]
    before, now = {r["item_id"]: r["score"] for r in first}, {r["item_id"]: r["score"] for r in after}
    assert any(abs(before[i] - now[i]) > 1e-6 for i in set(before) & set(now)), "the scores follow the new profile"


def test_disliked_ids_keep_an_item_out_and_old_callers_keep_working(running_app) -> None:
    url, client = running_app
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/recommend"]["parameters"]
    assert [p["parameter_name"] for p in params] == ["liked_ids", "k", "diversity", "disliked_ids"]
    assert next(p for p in params if p["parameter_name"] == "disliked_ids")["parameter_has_default"] is True
    plain = client.predict(BOARD_PROFILE, 10, api_name="/recommend")  # an old caller: no disliked_ids
    disliked = plain[0]["item_id"]
    without = client.predict(liked_ids=BOARD_PROFILE, k=10, disliked_ids=[disliked], api_name="/recommend")
    assert disliked not in {r["item_id"] for r in without}
    explained = client.predict(BOARD_PROFILE, without[0]["item_id"], "fast", [disliked], api_name="/explain")
    assert [h["item_id"] for h in explained["history"]] == BOARD_PROFILE + [disliked]
    assert [h["disliked"] for h in explained["history"]] == [False] * len(BOARD_PROFILE) + [True]
    assert explained["mix"] == {"content": 1.0}  # the zero-shot model: nothing collaborative
    assert explained["score_parts"]["collaborative"] == 0.0
    assert "both liked and disliked" in _error_of(client, BOARD_PROFILE, 5, 0.0, [BOARD_PROFILE[0]],
                                                  api_name="/recommend")


@pytest.fixture(scope="module")
def media_app(tmp_path_factory):
    """The app on the tiny catalog with tones and clips (tests/ui/media_catalog.py), every encoder tiny: it
    starts in seconds."""
    root = tmp_path_factory.mktemp("media-app")
    catalog = write_media_catalog(root / "catalog")
    args = ["--catalog", str(catalog), "--text-encoder", "tiny-random", "--image-encoder", "tiny-random",
            "--audio-encoder", "tiny-random", "--data-dir", str(root / "data"), "--device", "cpu"]
    with running(args, root / "app.log", timeout=120) as url:
        yield Client(url, verbose=False)


def test_an_uploaded_audio_clip_finds_the_items_that_sound_like_it(media_app, tmp_path: Path) -> None:
    client = media_app
    clip = write_tone(tmp_path / "my-tune.ogg", 3.0, frequency=880.0)  # the tone of "cards"
    recs = client.predict(image=None, title="", description="", k=3, audio=handle_file(str(clip)),
                          api_name="/recommend_upload")
    assert [r["rank"] for r in recs] == [1, 2, 3] and recs[0]["item_id"] == "cards"
    assert all(set(r) == {"item_id", "title", "score", "rank"} for r in recs)
    explained = client.predict(image=None, title="", description="", item_id="cards", method="fast",
                               audio=handle_file(str(clip)), api_name="/explain_upload")
    parts, segments = explained["score_parts"], explained["upload_audio_segments"]
    assert segments and sum(s["attribution"] for s in segments) == pytest.approx(parts["audio"], abs=1e-4)
    assert explained["score"] == pytest.approx(recs[0]["score"], abs=1e-4)
    item = client.predict("cards", api_name="/item")
    assert item["has_audio"] is True and item["has_video"] is False and item["collection"] == "Board Album"
    # An old caller's four values still work on the same endpoint.
    assert len(client.predict(None, "Chess Master", "board game", 2, api_name="/recommend_upload")) == 2
    fake = tmp_path / "notes.ogg"
    fake.write_text("hello, I am text")
    message = _error_of(client, None, "", "", 3, handle_file(str(fake)), None, api_name="/recommend_upload")
    assert "notes.ogg" in message and "could not be opened" in message and "Traceback" not in message

