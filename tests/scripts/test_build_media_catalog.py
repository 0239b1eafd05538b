"""The bundled media catalog (assets/media) is licence-clean, and scripts/build_media_catalog.py's validation
refuses a catalog that is not. Offline and fast: only the validation runs (no apt, no PyAV, no transcoding)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MEDIA = REPO_ROOT / "assets" / "media"


def _load_script() -> ModuleType:
    """scripts/build_media_catalog.py imported as a module (scripts/ is not a package)."""
    name = "build_media_catalog"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


bmc = _load_script()


def _items(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "items.jsonl").read_text(encoding="utf-8").splitlines() if line]


def _write_items(folder: Path, items: list[dict]) -> None:
    (folder / "items.jsonl").write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items),
                                        encoding="utf-8")


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A throwaway copy of the committed catalog to tamper with."""
    dest = tmp_path / "media"
    shutil.copytree(MEDIA, dest)
    return dest


def test_committed_catalog_is_valid():
    assert bmc.validate_catalog(MEDIA) == []


def test_check_mode_exit_codes(copy: Path):
    assert bmc.main(["--check", "--out", str(MEDIA)]) == 0
    (copy / "licenses" / "nexuiz-music.copyright").unlink()
    assert bmc.main(["--check", "--out", str(copy)]) == 1


def test_every_referenced_file_exists_and_sizes_are_within_limits():
    items = _items(MEDIA)
    assert 190 <= len(items) <= 240
    assert [i["item_id"] for i in items] == sorted(i["item_id"] for i in items)
    for item in items:
        assert tuple(item) == bmc.ITEM_KEYS
        for key in ("audio", "video", "image", "license_file"):
            if item[key] is not None:
                assert (MEDIA / item[key]).is_file(), (item["item_id"], key, item[key])
        if item["audio"]:
            assert item["audio"].endswith(".opus")
            assert (MEDIA / item["audio"]).stat().st_size <= 150 * 1024, item["item_id"]
        if item["video"]:
            assert item["video"].endswith(".webm") and item["duration_s"] <= 10.0
            assert item["image"] and item["image"].endswith(".jpg")
    total = sum(p.stat().st_size for p in MEDIA.rglob("*") if p.is_file())
    assert total < 40 * 1024 * 1024


def test_collections_are_balanced_and_excluded_sources_absent():
    items = _items(MEDIA)
    music: dict[str, int] = {}
    for item in items:
        if item["audio"]:
            music[item["collection"]] = music.get(item["collection"], 0) + 1
    assert len(music) == 8 and max(music.values()) <= 25 and min(music.values()) > 2
    text = (MEDIA / "items.jsonl").read_text(encoding="utf-8")
    assert "greatgigantic" not in text and "drascula" not in text


def test_non_free_licence_is_refused(copy: Path):
    items = _items(copy)
    victim = next(i for i in items if i["item_id"].startswith("wesnoth-"))
    victim["license"] = "CC-BY-NC-3.0"
    victim["attribution"] = victim["attribution"].replace("licence: GPL-2.0-or-later", "licence: CC-BY-NC-3.0")
    _write_items(copy, items)
    problems = bmc.validate_catalog(copy)
    assert any(victim["item_id"] in p and "not on the allow-list" in p for p in problems), problems
    assert all(victim["item_id"] in p for p in problems), problems


def test_missing_copyright_file_is_refused(copy: Path):
    (copy / "licenses" / "hyperrogue-music.copyright").unlink()
    problems = bmc.validate_catalog(copy)
    hyperrogue = {i["item_id"] for i in _items(copy) if i["license_file"] == "licenses/hyperrogue-music.copyright"}
    assert hyperrogue
    named = {iid for iid in hyperrogue if any(f"'{iid}'" in p and "copyright file" in p for p in problems)}
    assert named == hyperrogue, problems


def test_missing_attribution_is_refused(copy: Path):
    items = _items(copy)
    victim = next(i for i in items if i["item_id"].startswith("singularity-"))
    victim["attribution"] = ""
    _write_items(copy, items)
    problems = bmc.validate_catalog(copy)
    assert any(f"'{victim['item_id']}'" in p and "attribution" in p for p in problems), problems


def test_attribution_without_author_or_source_is_refused(copy: Path):
    items = _items(copy)
    no_author, no_source = items[0], items[1]
    no_author["attribution"] = no_author["attribution"].replace('" by ', '" ', 1)
    no_source["attribution"] = "; ".join(p for p in no_source["attribution"].split("; ") if not p.startswith("source:"))
    _write_items(copy, items)
    problems = bmc.validate_catalog(copy)
    assert any(f"'{no_author['item_id']}'" in p and "<author>" in p for p in problems), problems
    assert any(f"'{no_source['item_id']}'" in p and "source package" in p for p in problems), problems


def test_excluded_source_is_refused(copy: Path):
    items = _items(copy)
    victim = next(i for i in items if i["item_id"].startswith("supertux-"))
    old_path = victim["attribution"].split("; source: ")[1].split(";")[0].split(", ", 1)[1]
    victim["attribution"] = victim["attribution"].replace(
        old_path, "usr/share/games/supertux2/music/forest/greatgigantic.ogg")
    _write_items(copy, items)
    problems = bmc.validate_catalog(copy)
    assert any(f"'{victim['item_id']}'" in p and "excluded" in p for p in problems), problems


def test_licence_allow_list():
    assert bmc.licence_allowed("GPL-2.0-or-later")
    assert bmc.licence_allowed("CC-BY-SA-3.0+ OR GPL-2.0-or-later")
    assert not bmc.licence_allowed("CC-BY-NC-SA-3.0")
    assert not bmc.licence_allowed("GPL-2.0-or-later OR Drascula-License")
    assert not bmc.licence_allowed("")


def test_dep5_reading_picks_the_last_matching_stanza():
    text = (MEDIA / "licenses" / "hyperrogue-music.copyright").read_text(encoding="utf-8")
    stanzas = bmc.parse_dep5(text)
    assert stanzas is not None
    matches = [s for s in stanzas if any(bmc.dep5_glob(p).match("music/hr3-caves.ogg") for p in s.patterns)]
    assert matches[0].licence == "GPL-2+" and matches[-1].licence == "CC-BY-SA-3.0"
    assert "Shawn Parrotte" in matches[-1].copyright
    assert bmc.parse_dep5((MEDIA / "licenses" / "nexuiz-music.copyright").read_text(encoding="utf-8")) is None


# --------------------------------------------------------------------------- gameplay clips


def _gameplay(items: list[dict]) -> list[dict]:
    return [i for i in items if i["item_id"].startswith("gameplay-")]


def test_gameplay_clips_are_many_games_with_manifests_and_small_files():
    items = _items(MEDIA)
    clips = _gameplay(items)
    games = {c["collection"] for c in clips}
    assert len(clips) >= 25 and len(games) >= 20
    assert max(sum(1 for c in clips if c["collection"] == g) for g in games) <= 3
    specs = {g.item_id for g in bmc.GAMEPLAY}
    for clip in clips:
        assert clip["item_id"] in specs
        assert clip["video"] == f"video/{clip['item_id']}.webm" and clip["audio"] is None
        assert (MEDIA / clip["video"]).stat().st_size <= bmc.VIDEO_TARGET_BYTES, clip["item_id"]
        assert 7.5 <= clip["duration_s"] <= 8.0
        manifest = json.loads((MEDIA / "recordings" / f"{clip['item_id']}.json").read_text(encoding="utf-8"))
        assert bmc.clip_problem(manifest["stats"], 80) is None, clip["item_id"]  # moved and was not black
        assert f"Debian package {manifest['package']} {manifest['version']}" in clip["attribution"]
        assert clip["license_file"] == f"licenses/{manifest['art_package']}.copyright"
        assert bmc.GAMEPLAY_NOTE_HEAD in clip["attribution"]


def test_gameplay_clips_share_collections_with_the_music_of_their_game():
    items = _items(MEDIA)
    music_collections = {i["collection"] for i in items if i["audio"]}
    with_music = [c for c in _gameplay(items) if "; music: " in c["attribution"]]
    assert len(with_music) >= 6
    for clip in with_music:
        assert clip["collection"] in music_collections, clip["item_id"]
        track_id = clip["attribution"].split("8 s of the music item ")[1].split(";")[0]
        track = next(i for i in items if i["item_id"] == track_id)
        assert track["collection"] == clip["collection"]
        assert track["license"] in bmc.licence_ids(clip["license"]) or track["license"] in clip["license"]
    assert len({c["collection"] for c in _gameplay(items)} & music_collections) >= 5


def test_gameplay_clip_without_its_manifest_is_refused(copy: Path):
    victim = _gameplay(_items(copy))[0]
    (copy / "recordings" / f"{victim['item_id']}.json").unlink()
    problems = bmc.validate_catalog(copy)
    assert any(f"'{victim['item_id']}'" in p and "recording manifest" in p for p in problems), problems


def test_gameplay_clip_whose_manifest_names_another_version_is_refused(copy: Path):
    victim = _gameplay(_items(copy))[0]
    path = copy / "recordings" / f"{victim['item_id']}.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["version"] = "0.0-0"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    problems = bmc.validate_catalog(copy)
    assert any(f"'{victim['item_id']}'" in p and "0.0-0" in p for p in problems), problems


def test_gameplay_clip_that_does_not_name_its_program_is_refused(copy: Path):
    items = _items(copy)
    victim = _gameplay(items)[0]
    victim["attribution"] = "; ".join(p for p in victim["attribution"].split("; ")
                                      if not p.startswith("gameplay recorded under Xvfb"))
    _write_items(copy, items)
    problems = bmc.validate_catalog(copy)
    assert any(f"'{victim['item_id']}'" in p and "recorded from" in p for p in problems), problems


def test_static_and_black_captures_are_refused():
    moving = {"frames": 80, "moving_steps": 0.9, "mean_motion": 4.0, "mean_luma": 90.0, "lit_share": 0.7,
              "luma_std": 40.0}
    assert bmc.clip_problem(moving, 80) is None
    assert "static" in bmc.clip_problem({**moving, "moving_steps": 0.1}, 80)
    assert "static" in bmc.clip_problem({**moving, "mean_motion": 0.1}, 80)
    assert "black" in bmc.clip_problem({**moving, "lit_share": 0.0, "mean_luma": 1.0}, 80)
    assert "black" in bmc.clip_problem({**moving, "luma_std": 0.5}, 80)
    assert "frames" in bmc.clip_problem({**moving, "frames": 40}, 80)
    # a starfield with ships: dark, but lit enough
    assert bmc.clip_problem({**moving, "mean_luma": 1.6, "lit_share": 0.016, "luma_std": 9.4}, 80) is None


def test_licence_expressions_of_clips_with_soundtracks():
    assert bmc.combine_licences("GPL-3.0-or-later", "GPL-2.0-or-later") == "GPL-3.0-or-later AND GPL-2.0-or-later"
    assert bmc.combine_licences("GPL-2.0-only", "GPL-2.0-only") == "GPL-2.0-only"
    assert bmc.combine_licences("GPL-2.0-or-later", "") == "GPL-2.0-or-later"
    assert bmc.combine_licences("GPL-2.0-or-later", "CC-BY-SA-3.0+ OR GPL-2.0-or-later") == \
        "GPL-2.0-or-later AND (CC-BY-SA-3.0+ OR GPL-2.0-or-later)"
    assert bmc.licence_ids("GPL-2.0-or-later AND (CC-BY-SA-3.0+ OR GPL-2.0-or-later)") == [
        "GPL-2.0-or-later", "CC-BY-SA-3.0", "GPL-2.0-or-later"]
    assert bmc.licence_allowed("BSD-3-Clause AND CC-BY-SA-3.0")
    assert not bmc.licence_allowed("GPL-2.0-or-later AND CC-BY-NC-3.0")


def test_footage_licence_is_read_from_the_graphics_package_copyright():
    spec = next(g for g in bmc.GAMEPLAY if g.art.package == "freedoom")
    text = (MEDIA / "licenses" / "freedoom.copyright").read_text(encoding="utf-8")
    licence, how = bmc.art_licence(spec.art, "0.12.1-2", text)
    assert licence == "BSD-3-Clause" and "freedoom-license" in how
    with pytest.raises(bmc.BuildError, match="no longer says"):
        bmc.art_licence(spec.art, "0.12.1-2", text.replace("Neither the name of the freedoom project", "X"))
    supertux = next(g for g in bmc.GAMEPLAY if g.art.package == "supertux-data")
    text = (MEDIA / "licenses" / "supertux-data.copyright").read_text(encoding="utf-8")
    assert bmc.art_licence(supertux.art, "0.6.3-2", text)[0] == "GPL-3.0-or-later"
