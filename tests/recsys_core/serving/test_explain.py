"""Explanations on tiny models whose right answer is known, plus the service/UI/API contract."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from recsys_core.config import ImageEncoderConfig, TextEncoderConfig
from recsys_core.encoders.image import ImageEncoder
from recsys_core.encoders.text import TextEncoder
from recsys_core.encoders.tiny import _vocab
from recsys_core.errors import EmptyProfileError, InvalidInputError, UnknownItemError
from recsys_core.serving.explain import ExplainConfig, explain_image, explain_text, heatmap_cells, modality_share


class IdentityEmbeddingModel(nn.Module):
    """Token states = one-hot word embeddings: the pooled vector counts tokens, nothing mixes."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(hidden_size=vocab_size)
        self.embeddings = nn.Embedding(vocab_size, vocab_size)
        with torch.no_grad():
            self.embeddings.weight.copy_(torch.eye(vocab_size))

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(last_hidden_state=self.embeddings(input_ids))


def test_a_scorer_that_reads_one_token_gives_it_the_top_attribution() -> None:
    from transformers import BertTokenizer

    vocab = _vocab()
    encoder = TextEncoder(IdentityEmbeddingModel(len(vocab)), BertTokenizer(vocab=vocab),
                          TextEncoderConfig(model="test", max_length=64), "identity")
    chess = vocab["chess"]
    attribution = explain_text(encoder, "a board game : chess , card , puzzle", lambda pooled: 10 * pooled[:, chess],
                               n_steps=16, internal_batch_size=8)
    words = {w.word: w.score for w in attribution.words}
    assert max(words, key=words.get) == "chess"
    assert words["chess"] > 0
    assert all(abs(v) < 1e-6 for w, v in words.items() if w != "chess")
    # Completeness: the word scores add up to f(x) - f(baseline), up to the reported delta.
    assert sum(words.values()) == pytest.approx(attribution.score - attribution.baseline_score, abs=attribution.delta + 1e-5)
    assert "[CLS]" not in words and "[SEP]" not in words


def test_sub_words_are_merged_into_the_words_of_the_text(tiny_service) -> None:
    encoder = tiny_service.text_encoder
    text = "Xyzzy checkers!"
    attribution = explain_text(encoder, text, lambda pooled: pooled.sum(-1), n_steps=4, internal_batch_size=4)
    assert [w.word for w in attribution.words] == ["Xyzzy", "checkers", "!"]
    assert all(text[w.start : w.end] == w.word for w in attribution.words)
    assert len(attribution.token_scores) == len(encoder.tokenizer(text)["input_ids"])


class QuadrantBackbone(nn.Module):
    """A 'CNN' that only sees the top-left quadrant of the image."""

    num_features = 3

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))  # gives the module a device and a parameter to differentiate
        self.pool = nn.AdaptiveAvgPool2d(7)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(x)
        mask[..., : x.shape[-2] // 2, : x.shape[-1] // 2] = 1.0
        return self.pool(x * mask * self.scale)

    def cam_layer(self) -> nn.Module:
        return self.pool


@pytest.mark.parametrize("method", ["fast", "thorough"])
def test_a_scorer_that_sees_one_quadrant_puts_the_heat_there(method: str) -> None:
    encoder = ImageEncoder(QuadrantBackbone(), ImageEncoderConfig(model="test", image_size=224), "quadrant")
    image = Image.new("RGB", (224, 224), (255, 255, 255))
    heat, name = explain_image(encoder, image, lambda pooled: pooled.sum(-1), method=method, config=ExplainConfig())
    assert name == ("gradcam" if method == "fast" else "occlusion")
    assert heat.ndim == 2 and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    h, w = heat.shape
    top_left = heat[: h // 2, : w // 2].sum()
    assert top_left / heat.sum() > 0.85
    cells = heatmap_cells(heat, 7)
    assert cells.argmax() in {0, 1, 2, 7, 8, 9, 14, 15, 16}


def test_modality_share_keeps_the_sign_of_each_part() -> None:
    """Defect 2: "0.202 = text 0.230 + image -0.029" was shown as "text 89%, image 11%"."""
    share = modality_share({"text": 0.230, "image": -0.029})
    assert share["text"] == pytest.approx(0.230 / 0.259) and share["image"] == pytest.approx(-0.029 / 0.259)
    assert sum(abs(v) for v in share.values()) == pytest.approx(1.0)
    assert modality_share({"text": 0.3, "image": 0.1}) == pytest.approx({"text": 0.75, "image": 0.25})
    assert modality_share({"text": 0.0, "image": 0.0}) == {"text": 0.5, "image": 0.5}


def test_a_part_that_lowers_the_score_is_drawn_and_told_as_lowering_it(tiny_service) -> None:
    """Defect 2: a negative image part is a bar below zero in the "lowered" colour, a negative share in
    the summary and the API, and a heatmap of the regions that lowered the score, captioned so."""
    import gradio as gr

    from storage import Repository
    from ui.handlers import Handlers

    explanation = tiny_service.explain(["checkers"], "cards", "fast")
    assert explanation.text_score > 0 > explanation.image_score  # 0.028 = text 0.041 + image -0.013
    assert explanation.modality_share["image"] < 0 < explanation.modality_share["text"]
    api = explanation.to_api()
    assert api["modality_share"]["image"] < 0 and api["image_heatmap_direction"] == "lowered"
    assert explanation.image_heatmap.max() == pytest.approx(1.0)  # the regions that lowered it

    handlers = Handlers(tiny_service, Repository.from_url("sqlite://"))
    _, heat, parts, _, _, summary = handlers.explain({"liked": ["checkers"], "selected": "cards"}, "fast",
                                                     progress=lambda *a, **k: None)
    frame = parts if not isinstance(parts, gr.BarPlot) else parts.constructor_args["value"]
    image_rows = frame[frame["part"] == "image"].set_index("effect")
    value_column = [c for c in frame.columns if c not in ("part", "effect")][0]
    assert image_rows.loc["lowered the score", value_column] < 0 == image_rows.loc["raised the score", value_column]
    assert isinstance(heat, gr.AnnotatedImage) and "lowered" in heat.label
    _, masks = heat.constructor_args["value"]
    assert all("lowered" in label for _, label in masks)
    image_share = explanation.modality_share["image"]
    assert f"image {image_share:.0%}".replace("-", "−") in summary
    assert f"image {explanation.image_score:.3f}".replace("-", "−") in summary
    assert "raised the score" not in summary.split("Words")[0]


def test_service_explanation_matches_the_served_score(tiny_service) -> None:
    liked = ["chess", "cards"]
    rec = next(r for r in tiny_service.recommend(liked, 5) if r.image is not None)
    explanation = tiny_service.explain(liked, rec.item_id, "fast")
    assert explanation.score == pytest.approx(rec.score, abs=1e-5)
    assert explanation.text.score == pytest.approx(rec.score, abs=1e-4)  # recomputed with gradients
    assert sum(abs(v) for v in explanation.modality_share.values()) == pytest.approx(1.0)
    assert [h.item_id for h in explanation.history] == liked
    assert sum(h.contribution for h in explanation.history) == pytest.approx(rec.score, abs=1e-5)
    assert explanation.image_heatmap is not None and explanation.image_method == "gradcam"
    api = explanation.to_api()
    assert set(api) >= {"tokens", "image_heatmap", "modality_share", "history", "method", "delta", "model_version"}
    heat = np.asarray(api["image_heatmap"])
    assert heat.ndim == 2 and heat.min() >= 0 and heat.max() <= 1
    assert all(isinstance(w, str) and isinstance(s, float) for w, s in api["tokens"])
    assert api["model_version"] == tiny_service.model_version
    # Cached per (model version, liked ids, item, method).
    assert tiny_service.explain(liked, rec.item_id, "fast") is explanation
    thorough = tiny_service.explain(liked, rec.item_id, "thorough")
    assert thorough is not explanation and thorough.image_method == "occlusion"


def test_item_without_image_is_explained_by_text_only(tiny_service) -> None:
    explanation = tiny_service.explain(["chess"], "noimage", "fast")
    assert explanation.image_heatmap is None and explanation.image_score == 0.0
    # Signed: the whole movement is the text's, in the text part's direction.
    assert explanation.modality_share == {"text": 1.0 if explanation.text_score > 0 else -1.0, "image": 0.0}
    assert explanation.to_api()["image_heatmap"] == []


@pytest.mark.parametrize(
    ("liked", "item", "method", "error"),
    [
        ([], "chess", "fast", EmptyProfileError),
        (["nope"], "chess", "fast", UnknownItemError),
        (["chess"], "nope", "fast", UnknownItemError),
        (["chess"], "cards", "slow", InvalidInputError),
    ],
)
def test_bad_explain_requests_are_clear_errors(tiny_service, liked, item, method, error) -> None:
    with pytest.raises(error):
        tiny_service.explain(liked, item, method)


def test_upload_explanation_maps_the_uploaded_image_too(tiny_service, tiny_catalog) -> None:
    image = tiny_catalog.get("space").image.read_bytes()
    recs = tiny_service.recommend_for_upload(image=image, title="space shooter", k=2)
    explanation = tiny_service.explain_upload(image=image, title="space shooter", item_id=recs[0].item_id)
    assert explanation.score == pytest.approx(recs[0].score, abs=1e-5)
    assert explanation.query_heatmap is not None and explanation.query_heatmap.shape == explanation.image_heatmap.shape
    assert explanation.history == ()
    with pytest.raises(InvalidInputError):
        tiny_service.explain_upload(image=None, item_id="chess")


def test_explainer_works_on_its_own_copy_of_the_encoders(tiny_service) -> None:
    """Captum's hooks must never touch the encoders that serve recommendations."""
    explainer = tiny_service.explainer
    assert explainer.text_encoder is not tiny_service.text_encoder
    assert explainer.image_encoder is not tiny_service.image_encoder
    tiny_service.explain(["chess"], "checkers", "fast")
    assert not tiny_service.text_encoder.embedding_layer()._forward_hooks
    assert not tiny_service.image_encoder.cam_layer()._forward_hooks


def test_handlers_render_the_explanation_panel(tiny_service) -> None:
    import gradio as gr

    from storage import Repository
    from ui.handlers import Handlers

    handlers = Handlers(tiny_service, Repository.from_url("sqlite://"))
    api = handlers.api_explain(["chess"], "checkers", "fast")
    assert api["item_id"] == "checkers" and api["method"] == "fast"
    with pytest.raises(gr.Error, match="not allowed"):
        handlers.api_explain(["chess"], "checkers", "bogus")
    state = {"liked": ["chess"], "selected": "checkers"}
    tokens, heat, share, history, _table, summary = handlers.explain(state, "fast", progress=lambda *a, **k: None)
    assert "".join(seg for seg, _ in tokens).startswith("Checkers")
    assert all(score is None or -1.0 <= score <= 1.0 for _, score in tokens)
    image_path, masks = heat.constructor_args["value"]
    assert image_path.endswith("checkers.png") and masks[0][0].shape == (64, 64)
    assert heat.label.startswith("Image regions that")
    assert list(dict.fromkeys(share["part"])) == ["text", "image"]  # a value-only update, see render.signed_bars
    assert set(history["liked item"]) == {"Chess Master"} and set(history["effect"]) == {"raised the score",
                                                                                        "lowered the score"}
    assert "Score" in summary
    with pytest.warns(UserWarning, match="select a recommendation"):  # a UI event shows it, raises nothing
        assert handlers.explain({}, "fast", progress=lambda *a, **k: None) == gr.skip()


@pytest.mark.parametrize(("uploaded", "item"), [("checkers", "checkers"), ("checkers", "chess"), ("puzzle", "space")])
def test_fast_upload_heatmaps_agree_with_the_image_part(tiny_service, tiny_catalog, uploaded, item) -> None:
    """Defect 3: "image +0.015" then "No image region raised the score" with both heatmaps empty.

    For the zero-shot model the fast map is the exact split of the image part over the 7x7 regions,
    so a positive part always has regions that raised it, on the catalog image and on the upload.
    """
    from recsys_core.serving.explain import explain_image

    image = tiny_catalog.get(uploaded).image.read_bytes()
    explanation = tiny_service.explain_upload(image=image, item_id=item, method="fast")
    assert explanation.image_score > 0 and explanation.image_direction == "raised"
    assert explanation.image_heatmap.max() == pytest.approx(1.0)
    assert explanation.query_heatmap.max() == pytest.approx(1.0)
    from ui.render import explanation_summary

    assert "No image region" not in explanation_summary(explanation, tiny_catalog)
    # The split is exact: the regions' signed contributions add up to the image part.
    state = tiny_service._state()
    query = tiny_service._upload_query(state, tiny_service._check_upload(image, "", ""))
    split, _ = state.model.region_split_fns(query, tiny_catalog.index_of(item))
    encoder = tiny_service.explainer.image_encoder
    pil = tiny_service._item_image(tiny_catalog.get(item))
    with torch.no_grad():
        regions, _ = encoder(encoder.preprocess([pil]))
    assert float(split(regions[0]).sum()) == pytest.approx(explanation.image_score, abs=1e-5)
    heat, name = explain_image(encoder, pil, lambda pooled: pooled.sum(-1), method="fast",
                               config=tiny_service.explain_config, region_fn=split)
    assert name == "gradcam" and heat.max() == pytest.approx(1.0)
