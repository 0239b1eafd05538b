"""One-click examples (ui/examples.py): profiles from the served catalog, and an example upload."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from recsys_core.data.adapters import resolve_catalog
from storage import Repository
from ui.examples import UPLOAD_EXAMPLE, ExampleProfile, profiles_for
from ui.handlers import Handlers
from ui.layout import build_demo


def _fn(demo: gr.Blocks, api_name: str):
    return next(fn for fn in demo.fns.values() if fn.api_name == api_name)


def test_the_bundled_catalog_has_the_three_profiles_with_real_ids() -> None:
    catalog = resolve_catalog("demo")
    profiles = dict(profiles_for(catalog))
    assert list(profiles) == ["chess fan", "space shooter fan", "puzzle fan"]
    assert all(len(ids) == 3 and len(set(ids)) == 3 for ids in profiles.values())
    catalog.check_ids([i for ids in profiles.values() for i in ids])
    assert all("chess" in catalog.get(i).title.lower() for i in profiles["chess fan"])
    assert {"dodgindiamond2", "marsshooter"} <= set(profiles["space shooter fan"])
    assert all("LogicGame" in catalog.get(i).genres for i in profiles["puzzle fan"])
    assert UPLOAD_EXAMPLE.image.is_file()


def test_profiles_that_do_not_apply_are_hidden(tiny_catalog) -> None:
    assert profiles_for(tiny_catalog, [ExampleProfile("x", (("no such word", None), ("", "NoSuchGenre")))]) == []
    found = dict(profiles_for(tiny_catalog, [ExampleProfile("one", (("chess", None),), min_items=1),
                                             ExampleProfile("two", (("chess", None),))]))
    assert found == {"one": ["chess"]}  # one chess item: enough for min_items=1, not for the default 2


def test_an_example_runs_what_the_tab_button_runs(tiny_service) -> None:
    handlers = Handlers(tiny_service, Repository.from_url("sqlite://"))
    demo = build_demo(handlers)
    for example, button in (("ui_example_upload_run", "ui_upload"),):
        ran, clicked = _fn(demo, example), _fn(demo, button)
        assert ran.fn == clicked.fn
        assert [c._id for c in ran.inputs] == [c._id for c in clicked.inputs]
        assert [c._id for c in ran.outputs] == [c._id for c in clicked.outputs]
    assert not any(fn.api_name == "ui_example_recommend" for fn in demo.fns.values())  # tiny catalog: no profile
    request = SimpleNamespace(session_hash="s")
    shown = handlers.recommend_upload(str(UPLOAD_EXAMPLE.image), UPLOAD_EXAMPLE.title, UPLOAD_EXAMPLE.description, 3,
                                      request)
    assert len(shown[3]["results"]) == 3


def test_a_profile_example_fills_items_you_like_and_runs_recommend(tiny_catalog, tmp_path) -> None:
    from tests.conftest import make_tiny_service

    service = make_tiny_service(resolve_catalog("demo"), tmp_path / "f")  # built, not prepared: only the layout
    demo = build_demo(Handlers(service, Repository.from_url("sqlite://")))
    filled, ran, clicked = (_fn(demo, n) for n in ("ui_example_profile", "ui_example_recommend", "ui_recommend"))
    liked = clicked.inputs[0]
    assert [c._id for c in filled.outputs] == [liked._id]
    assert ran.fn == clicked.fn and ran.trigger_after == filled._id
    assert [c._id for c in ran.inputs] == [c._id for c in clicked.inputs]
    assert [c._id for c in ran.outputs] == [c._id for c in clicked.outputs]
