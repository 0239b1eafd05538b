"""Rendering of service results for Gradio components (captions, details, tables). Pure functions."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

from recsys_core.data.catalog import Catalog, Item, genre_label
from recsys_core.service import Recommendation

DESCRIPTION_CHARS = 600
# Shown for items without an image: gr.Gallery refuses None entries.
NO_IMAGE = Path(__file__).resolve().parent.parent / "assets" / "ui" / "no-image.png"


def esc(text: str) -> str:
    """Escape catalog/user text before it reaches Markdown/HTML (no injection via item data)."""
    return html.escape(text, quote=True)


# U+2713 is in DejaVu Sans and most text fonts: it shows without an emoji font (a bare Debian Chromium).
LIKED_MARK = "\u2713 "


def catalog_gallery(items: Sequence[Item], liked: Sequence[str] | None = None) -> list[tuple[str | None, str]]:
    """Picker tiles: image and title, the title marked when the item is already liked."""
    liked = set(liked or ())
    return [(str(item.image or NO_IMAGE), (LIKED_MARK if item.item_id in liked else "") + item.title)
            for item in items]


def genre_choices(genres: Sequence[str], any_label: str) -> list[tuple[str, str]]:
    """(label, value) pairs for the genre dropdown: readable names shown, the catalog's ids sent."""
    return [(any_label, any_label)] + [(genre_label(g), g) for g in genres]


def genres_text(genres: Sequence[str]) -> str:
    return ", ".join(genre_label(g) for g in genres)


# Before the title of an item with a track or a clip (in DejaVu Sans, so they show without an emoji font).
AUDIO_MARK, VIDEO_MARK = "\u266a", "\u25b6"


def media_marks(has_audio: bool, has_video: bool) -> str:
    """"♪ " / "▶ " / "♪▶ " for an item that has audio / a video / both ("" for neither)."""
    marks = (AUDIO_MARK if has_audio else "") + (VIDEO_MARK if has_video else "")
    return marks + " " if marks else ""


def results_gallery(recs: Sequence[Recommendation]) -> list[tuple[str | None, str]]:
    """Result tiles captioned "rank · score · title": the caption is one line (ui/layout.py CSS) and a long
    title is cut at its end, so rank and score stay readable on a phone. Items with audio or video have their
    marks (:func:`media_marks`) before the title: their players are in the details."""
    return [(str(r.image or NO_IMAGE),
             f"{r.rank} · {num(r.score)} · {media_marks(r.has_audio, r.has_video)}{r.title}") for r in recs]


def item_images(item: Item) -> list[tuple[str, str]]:
    """The item's icon, then its screenshots, captioned, for the details' image strip."""
    images = [(str(item.image), "icon")] if item.image else []
    return images + [(str(path), f"screenshot {n}") for n, path in enumerate(item.extra_images, start=1)]


OTHER_PART = "item ID & bias"  # what a fine-tuned (fusion) score has besides text and image
COLLAB_PART = "collaborative"  # the hybrid's item-item part (what people who liked your items also liked)
# A part whose every value rounds to 0 at the table's precision is left out: the zero-shot model shows text
# and image only (and audio and video on a catalog with them), the hybrid adds its collaborative part, the
# fusion model its ID & bias part.
_SHOWN = 5e-5
#: The parts besides text and image, in the order of the score's equation.
EXTRA_PARTS = ("audio", "video", COLLAB_PART, OTHER_PART)


def result_parts(recs: Sequence[Recommendation]) -> list[str]:
    """The parts the scores of ``recs`` have besides text and image, in the order they are shown."""
    return [part for part in EXTRA_PARTS if any(abs(_part_values(r)[part]) >= _SHOWN for r in recs)]


def _part_values(r: Recommendation) -> dict[str, float]:
    return {"text": r.text_score, "image": r.image_score, "audio": r.audio_score, "video": r.video_score,
            COLLAB_PART: r.collaborative_score, OTHER_PART: r.other_score}


def results_headers(recs: Sequence[Recommendation]) -> list[str]:
    """The columns of :func:`results_table` for these results."""
    return (["rank", "title", "score", "text part", "image part"] + [f"{p} part" for p in result_parts(recs)]
            + ["genres", "rank by score", "diversity gain", "item id"])


def results_table(recs: Sequence[Recommendation]) -> list[list[object]]:
    """One row per result (columns: :func:`results_headers`); "rank by score" and "diversity gain" are filled
    when diversity (MMR) re-ranked the list. The parts columns add up to the score."""
    extra = result_parts(recs)
    return [
        [r.rank, r.title, round(r.score, 4), round(r.text_score, 4), round(r.image_score, 4),
         *(round(_part_values(r)[p], 4) + 0.0 for p in extra), genres_text(r.genres),  # + 0.0: no "-0.0"
         "" if r.score_rank is None else r.score_rank,
         "" if r.diversity_gain is None else round(r.diversity_gain, 3), r.item_id]
        for r in recs
    ]


def results_frame(recs: Sequence[Recommendation]):
    """:func:`results_table` with its headers, for the results' ``gr.Dataframe`` (the columns follow the model)."""
    import pandas as pd

    return pd.DataFrame(results_table(recs), columns=results_headers(recs))


def reordered(recs: Sequence[Recommendation]) -> bool:
    """True when diversity re-ranking put some result elsewhere than its rank by score."""
    return any(r.score_rank is not None and r.score_rank != r.rank for r in recs)


def diversity_note(recs: Sequence[Recommendation]) -> str:
    """The line above the results when MMR changed the order ("" when the list is by score)."""
    if not reordered(recs):
        return ""
    moved = sum(1 for r in recs if r.score_rank != r.rank)
    return ("**Diversity re-ordered this list:** it is no longer sorted by score. "
            f"{moved} of {len(recs)} results moved; each result's details and the table "
            "(\u201cWhere each score comes from\u201d) give its score, its rank by score alone and its "
            "diversity gain (1 \u2212 its highest similarity to the results above it).")


def score_parts_frame(recs: Sequence[Recommendation]):
    """Long-format frame for a stacked bar chart: how much of each score comes from text and image (and the
    collaborative or ID & bias part, where the model has one)."""
    import pandas as pd

    parts = ["text", "image", *result_parts(recs)]
    rows = []
    for r in recs:
        label = f"{r.rank:02d}. {r.title}"  # zero-padded: the chart sorts labels as text
        values = _part_values(r)
        rows += [{"item": label, "part": part, "score": round(values[part], 4)} for part in parts]
    return pd.DataFrame(rows, columns=["item", "part", "score"])


# What the initial (empty) results table shows; each result list brings its own columns (results_frame).
RESULTS_HEADERS = results_headers([])


def printed_terms(score: float, values: Sequence[float], digits: int = 3) -> list[float]:
    """``values`` rounded to ``digits`` so that they add up to ``score`` rounded the same way.

    Rounding each part on its own can leave the printed sum a unit off the printed score (0.333 + 0.333 +
    0.333 for 1.000). The units missing (or over) go to the parts whose rounding moved them most the other
    way (largest remainder), so no part moves by more than one unit of the last digit.
    """
    unit = 10.0 ** -digits
    rounded = [round(v, digits) for v in values]
    missing = round((round(score, digits) - sum(rounded)) / unit)
    if missing and rounded:
        step = unit if missing > 0 else -unit
        # Parts rounded down the most get a unit added first (parts rounded up the most lose one first).
        order = sorted(range(len(values)), key=lambda i: (rounded[i] - values[i]) * (1 if missing > 0 else -1))
        for i in (order * abs(missing))[:abs(missing)]:
            rounded[i] = round(rounded[i] + step, digits)
    return [v + 0.0 for v in rounded]  # + 0.0: no "-0.000"


def score_parts(score: float, text: float, image: float, collaborative: float = 0.0, audio: float = 0.0,
                video: float = 0.0) -> list[tuple[str, float]]:
    """The named parts of a score: text and image always; audio, video, the collaborative part and the ID & bias
    part (the rest) when they are not 0 at the printed precision."""
    parts = [("text", text), ("image", image)]
    for name, value in (("audio", audio), ("video", video), (COLLAB_PART, collaborative)):
        if round(value, 3) != 0:
            parts.append((name, value))
    other = score - text - image - audio - video - collaborative
    if round(other, 3) != 0:
        parts.append((OTHER_PART, other))
    return parts


def printed_parts(explanation) -> dict[str, float]:
    """The explanation's score parts as its equation prints them (:func:`score_equation`): what every other
    place that names a part prints too (the audio plot, the keyframe lines), so one part never shows as
    0.699 in one place and 0.700 in another."""
    e = explanation
    parts = score_parts(e.score, e.text_score, e.image_score, e.collaborative_score, e.audio_score, e.video_score)
    return dict(zip([name for name, _ in parts], printed_terms(e.score, [v for _, v in parts])))


def score_equation(score: float, text: float, image: float, collaborative: float = 0.0, audio: float = 0.0,
                   video: float = 0.0) -> str:
    """"score = text t + image i [+ audio a] [+ video v] [+ collaborative c] [+ item ID & bias b]": the terms add
    up to the score as printed (:func:`printed_terms`); a term besides text and image is shown whenever it is
    not 0."""
    parts = score_parts(score, text, image, collaborative, audio, video)
    terms = printed_terms(score, [v for _, v in parts])
    return f"**{num(score)}** = " + " + ".join(f"{name} {num(v)}" for (name, _), v in zip(parts, terms))


def scale_note(model_kind: str, hybrid: bool = False) -> str:
    """One line on what a score means, since the kinds of model score on different scales."""
    if hybrid:
        return ("Scale: hybrid scores add content similarity (weighted cosines) and item-item weights learned from "
                "interactions; they are not bounded by 1, so compare them only within one model.")
    if model_kind == "multimodal":
        return ("Scale: fine-tuned scores are logits (scaled cosine + item bias, unbounded), not the zero-shot "
                "0-1 weighted cosines; compare them only within one model.")
    return "Scale: zero-shot scores are weighted cosines (at most 1; higher = more alike)."


def item_details(item: Item, rec: Recommendation | None = None) -> str:
    lines = [f"### {esc(item.title)}"]
    if rec is not None:
        lines.append(f"**Rank {rec.rank}** · score " + score_equation(rec.score, rec.text_score, rec.image_score,
                                                                        rec.collaborative_score, rec.audio_score,
                                                                        rec.video_score))
        if rec.score_rank is not None and rec.diversity_gain is not None:
            lines.append(f"Diversity re-ranking: rank {rec.score_rank} by score alone · relevance score "
                         f"{num(rec.score)} · diversity gain {num(rec.diversity_gain)} (1 \u2212 its highest "
                         "similarity to the results above it)")
    if item.collection:
        lines.append("**Collection:** " + esc(item.collection))
    if item.genres:
        lines.append("**Genres:** " + esc(genres_text(item.genres)))
    if item.tags:
        lines.append("**Keywords:** " + esc(", ".join(item.tags)))
    description = item.description.strip()
    if description:
        short = description if len(description) <= DESCRIPTION_CHARS else description[:DESCRIPTION_CHARS].rsplit(" ", 1)[0] + " …"
        lines.append(esc(short).replace("\n", "<br>"))
    credit = []
    if item.license:
        credit.append("Licence: " + esc(item.license))
    if item.attribution:
        credit.append(esc(item.attribution))
    if item.extra_images:
        credit.append(f"{len(item.extra_images)} screenshot(s)")
    media = media_note(item)
    if media:
        credit.append(media)
    if item.url and item.url.startswith(("http://", "https://")):
        credit.append(f'<a href="{esc(item.url)}" target="_blank" rel="noopener">home page</a>')
    if credit:
        lines.append("<small>" + " · ".join(credit) + "</small>")
    lines.append(f"<small>item id: <code>{esc(item.item_id)}</code></small>")
    return "\n\n".join(lines)


def media_note(item: Item) -> str:
    """"audio and a video clip (players below)" for the details' credit line ("" without media)."""
    kinds = []
    if item.audio is not None:
        kinds.append("audio")
    elif item.audio_source is not None:
        kinds.append("a soundtrack")
    if item.video is not None:
        kinds.append("a video clip")
    if not kinds:
        return ""
    return " and ".join(kinds).capitalize() + " (players below)"


def catalog_summary(catalog: Catalog, model_version: str, device: str) -> str:
    with_image = sum(1 for i in catalog.items if i.image)
    return (
        f"**Catalog:** {esc(catalog.name)} · {len(catalog)} items ({with_image} with an image) · "
        f"**model:** `{esc(model_version)}` · **device:** {esc(device)}"
    )


def problems_table(catalog: Catalog) -> list[list[object]]:
    return [[p.row, p.item_id or "", p.message, "skipped" if p.skipped else "kept"] for p in catalog.problems]


def attribution_table(catalog: Catalog) -> list[list[str]]:
    root = catalog.root
    rows = []
    for item in catalog.items:
        license_file = ""
        if item.license_file is not None:
            try:
                license_file = str(item.license_file.relative_to(root))
            except ValueError:
                license_file = str(item.license_file)
        rows.append([item.item_id, item.title, item.license, license_file, item.attribution])
    return rows


# -- explanations ----------------------------------------------------------------------------------
def highlighted_text(explanation) -> list[tuple[str, float | None]]:
    """The explained text as (segment, score in [-1, 1] or None) for ``gr.HighlightedText``.

    Scores are scaled by the largest |score| so the colours use the full range; the gaps between
    words (spaces, punctuation handled as words) are kept unscored so the text reads naturally.
    """
    attribution = explanation.text
    if attribution is None:
        return []
    text = attribution.text
    peak = max((abs(w.score) for w in attribution.words), default=0.0) or 1.0
    out: list[tuple[str, float | None]] = []
    cursor = 0
    for word in attribution.words:
        if word.start > cursor:
            # Gaps (spaces, line breaks) become one space: each segment is drawn as its own box.
            out.append((" ", None))
        out.append((text[word.start : word.end], round(word.score / peak, 4)))
        cursor = word.end
    if cursor < len(text) and not attribution.truncated:
        out.append((text[cursor:], None))
    elif attribution.truncated:
        out.append((" … (the rest was beyond the encoder's token limit)", None))
    return out


def num(value: float, spec: str = ".3f") -> str:
    """A number as printed in the panel, with a true minus sign (a hyphen reads as a dash)."""
    return format(value, spec).replace("-", "\u2212")


def heatmap_on_image(image_path, heatmap, label: str = "evidence"):
    """``(image, [(mask, label)])`` for ``gr.AnnotatedImage``; the heatmap covers the CNN's centre crop."""
    if heatmap is None or image_path is None:
        return None
    import numpy as np
    from PIL import Image

    with Image.open(image_path) as img:
        width, height = img.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    heat = Image.fromarray((np.clip(heatmap, 0, 1) * 255).astype("uint8")).resize((side, side), Image.BILINEAR)
    mask = np.zeros((height, width), dtype=np.float32)
    mask[top : top + side, left : left + side] = np.asarray(heat, dtype=np.float32) / 255.0
    return (str(image_path), [(mask, label)])


def heatmap_caption(explanation, upload: bool = False) -> str:
    """The heatmap's title: which way its regions moved the score (the image part's direction)."""
    direction = f"{explanation.image_direction} the score"
    return f"Regions of your upload that {direction}" if upload else f"Image regions that {direction}"


def is_hybrid(explanation) -> bool:
    """The explained model has a collaborative part (the hybrid, with a share of it or a prior that is not 0).
    The zero-shot model (mix ``{"content": 1.0}``) and the fusion model (no mix) have none."""
    e = explanation
    return e.mix.get("collaborative", 0.0) > 0.0 or round(e.collaborative_score, 3) != 0


def mix_text(explanation) -> str:
    """"content 0.60 + collaborative 0.40": how the hybrid weighs its two sides ("" when it is not a mix)."""
    if not is_hybrid(explanation):
        return ""
    return " + ".join(f"{esc(name)} {value:.2f}" for name, value in explanation.mix.items())


def modality_frame(explanation):
    """The signed parts of the score (score units, adding up to it), for a sign-coloured bar chart; the
    collaborative part (the hybrid) and the ID & bias part (fusion models) get their bars when not 0."""
    e = explanation
    parts = score_parts(e.score, e.text_score, e.image_score, e.collaborative_score, e.audio_score, e.video_score)
    if is_hybrid(e) and COLLAB_PART not in dict(parts):  # a hybrid always shows its collaborative bar
        names = [name for name, _ in parts]
        where = names.index(OTHER_PART) if OTHER_PART in names else len(parts)  # before the ID & bias part
        parts.insert(where, (COLLAB_PART, e.collaborative_score))
    return signed_bars([name for name, _ in parts], [value for _, value in parts], "part", "score part")


RAISED, LOWERED = "raised the score", "lowered the score"
#: Red raises, blue lowers: the same code as the word highlights.
EFFECT_COLORS = {RAISED: "#dc2626", LOWERED: "#2563eb"}


def signed_bars(labels: Sequence[str], values: Sequence[float], x: str, y: str):
    """Long frame for a stacked ``gr.BarPlot(x=x, y=y, color="effect")``: per label a "raised" row (the
    value if positive, else 0) and a "lowered" row (the value if negative, else 0).

    Why two rows and not ``y_lim``: Gradio's NativePlot rebuilds its Vega spec when ``y_lim`` changes,
    and it rebuilds it from the *previous* value's rows (new axis, old bars). Stacked bars always
    have 0 in their domain, so the bars start at 0 without ``y_lim`` and a new value alone redraws
    them; both effects in every frame keep the colour scale the same from one value to the next.
    """
    import pandas as pd

    rows = []
    for label, value in zip(labels, values):
        value = round(float(value), 4)
        rows.append({x: label, "effect": RAISED, y: max(value, 0.0)})
        rows.append({x: label, "effect": LOWERED, y: min(value, 0.0)})
    return pd.DataFrame(rows, columns=[x, "effect", y])


def _unique_titles(titles: Sequence[str]) -> list[str]:
    """Bars are grouped by label: two liked items with one title get numbered apart."""
    seen: dict[str, int] = {}
    out = []
    for title in titles:
        seen[title] = seen.get(title, 0) + 1
        out.append(title if seen[title] == 1 else f"{title} ({seen[title]})")
    return out


DISLIKED_MARK = " (disliked)"  # after a disliked item's title in the history chart and table


def _history_titles(explanation, catalog: Catalog) -> list[str]:
    return _unique_titles([catalog.get(h.item_id).title + (DISLIKED_MARK if h.disliked else "")
                           for h in explanation.history])


def history_frame(explanation, catalog: Catalog):
    """Each liked (and disliked) item's contribution (``/explain``'s ``history``), for the "liked item" chart; a
    disliked item's bar is what it took away."""
    return signed_bars(_history_titles(explanation, catalog), [h.contribution for h in explanation.history],
                       "liked item", "contribution")


PRIOR_ROW = "(no liked item: the item's own prior)"
#: The order the parts chart draws its bars in: the equation's (Vega would sort them A-Z).
PART_ORDER = ["text", "image", *EXTRA_PARTS]


def history_table(explanation, catalog: Catalog):
    """The liked and disliked items behind the score, one row each, for a ``gr.Dataframe`` (3 decimals, as the
    panel prints numbers).

    Every model: the item (a disliked one marked as in the chart) and its contribution (a disliked item's is
    what it took away). The hybrid adds each one's content part, collaborative part and the item-item weight
    behind it, and a last row for the item's prior (what no liked item gives), so the contributions add up
    to the score (as printed: :func:`printed_terms`, and each row's two parts to its contribution). The
    zero-shot and fusion models get no collaborative columns (they would be all 0). None
    without a history (uploads).
    """
    import pandas as pd

    e = explanation
    if not e.history:
        return None
    titles = _history_titles(e, catalog)
    contributions = [h.contribution for h in e.history]
    if not is_hybrid(e):
        # The zero-shot contributions add up to the score: printed so that they still do (the fusion model's
        # leave-one-out drops do not add up, so they are only rounded).
        adds_up = e.model_kind != "multimodal"
        shown = printed_terms(e.score, contributions) if adds_up else [_r3(c) for c in contributions]
        return pd.DataFrame({"item": titles, "contribution": shown})
    prior = e.score - sum(contributions)
    with_prior = round(prior, 3) != 0
    totals = printed_terms(e.score, contributions + ([prior] if with_prior else []))
    rows = []
    for title, h, total in zip(titles, e.history, totals):
        content, collab = printed_terms(total, [h.contribution - h.collaborative, h.collaborative])
        rows.append([title, total, content, collab, _r3(h.item_weight)])
    if with_prior:
        rows.append([PRIOR_ROW, totals[-1], 0.0, totals[-1], None])
    return pd.DataFrame(rows, columns=["item", "contribution", "content part", "collaborative part",
                                       "item-item weight"])


def _r3(value: float) -> float:
    return round(float(value), 3) + 0.0  # + 0.0: no "-0.0"


def explanation_summary(explanation, catalog: Catalog) -> str:
    e = explanation
    hybrid = is_hybrid(e)
    share = ", ".join(f"{k} {num(v, '.0%')}" for k, v in e.modality_share.items())
    of = " + ".join(f"|{k}|" for k in e.modality_share)
    lines = [
        "Score " + score_equation(e.score, e.text_score, e.image_score, e.collaborative_score, e.audio_score,
                                  e.video_score)
        + f" (signed shares of {of}: {share}).",
    ]
    if hybrid:
        content = " and ".join(k for k in e.modality_share if k != "collaborative").capitalize()
        lines.append(f"Model mix: **{mix_text(e)}**. {content} are the content side (pretrained encoders); "
                     "the collaborative part comes from item-item weights learned from interactions (what people "
                     "who liked your items also liked), plus a prior for items nobody interacted with.")
    lines += [
        scale_note(e.model_kind, hybrid),
        f"Tokens: Integrated Gradients on the word embeddings (convergence delta {e.delta:.2g}); "
        f"regions: {esc(e.image_method or 'no image')}. Model `{esc(e.model_version)}`, {e.seconds:.2f} s.",
    ]
    if e.text is not None:
        totals: dict[str, float] = {}
        for w in e.text.words:
            if w.score > 0 and any(c.isalnum() for c in w.word):  # skip punctuation
                totals[w.word.lower()] = totals.get(w.word.lower(), 0.0) + w.score
        top = sorted(totals, key=lambda word: -totals[word])[:5]
        if top:
            lines.append("Words that raised the score most (all their occurrences): "
                         + ", ".join(f"**{esc(word)}**" for word in top) + ".")
    if e.image_heatmap is not None:
        if e.image_direction == "lowered":
            lines.append(f"The image lowers the score ({num(e.image_score)}): the heatmap shows the regions "
                         "that lowered it.")
        if float(e.image_heatmap.max()) == 0.0:
            lines.append(f"No image region on its own {e.image_direction} the score.")
    lines += media_summary(e, printed_parts(e))
    liked = [h for h in e.history if not h.disliked]
    if liked:
        best = max(liked, key=lambda h: h.contribution)
        title = catalog.get(best.item_id).title
        if e.model_kind == "multimodal" and not hybrid:  # leave-one-out drops: they rank, they do not add up
            lines.append(f"Above all because you liked **{esc(title)}**: without it the score would be "
                         f"{num(best.contribution)} lower.")
        else:
            lines.append(f"Above all because you liked **{esc(title)}**: {num(best.contribution)} of the "
                         f"{num(e.score)} score.")
    disliked = [h for h in e.history if h.disliked]
    if disliked:
        took = ", ".join(f"**{esc(catalog.get(h.item_id).title)}** {num(h.contribution)}" for h in disliked)
        lines.append(f"Your dislikes moved it by: {took} (a dislike pushes its look-alikes down).")
    return "\n\n".join(lines)


def _span(segment) -> str:
    return f"{segment.start_s:.1f}\u2013{segment.end_s:.1f} s"


def _moved(steps) -> bool:
    """Some step moved the score by a printed amount (0.0005 or more; the same test as ui.media.moved)."""
    return any(abs(step.attribution) >= 5e-4 for step in steps)


def _strongest(steps):
    return max(steps, key=lambda step: abs(step.attribution))


def media_summary(explanation, printed: dict[str, float] | None = None) -> list[str]:
    """Lines on the audio segments and video keyframes behind the audio and video parts (none without them).
    ``printed``: the parts as the equation prints them (:func:`printed_parts`)."""
    e = explanation
    printed = printed if printed is not None else printed_parts(e)
    lines = []
    # A part that counts for nothing (e.g. no liked item has audio) has nothing to say: all its steps are 0.
    if _moved(e.audio_segments):
        top = _strongest(e.audio_segments)
        lines.append(f"Audio part {num(printed.get('audio', e.audio_score))}, split over {len(e.audio_segments)} "
                     f"segment(s) of the item's track: {_span(top)} moved it most ({num(top.attribution, '+.3f')}).")
    if _moved(e.upload_audio_segments):
        top = _strongest(e.upload_audio_segments)
        lines.append(f"Of your clip's sound, {_span(top)} moved it most ({num(top.attribution, '+.3f')}; "
                     f"{len(e.upload_audio_segments)} segment(s) adding up to the audio part).")
    if _moved(e.video_frames):
        top = _strongest(e.video_frames)
        lines.append(f"Video part {num(printed.get('video', e.video_score))}, split over {len(e.video_frames)} "
                     f"keyframe(s): the one at {top.t_s:.1f} s moved it most ({num(top.attribution, '+.3f')}); the "
                     "strip shows its regions.")
    if _moved(e.upload_video_frames):
        top = _strongest(e.upload_video_frames)
        lines.append(f"Of your clip's keyframes, the one at {top.t_s:.1f} s moved it most "
                     f"({num(top.attribution, '+.3f')}).")
    if lines:
        # Permutation sampling keeps the sum exact (each ordering's gains add up to the part); only the split
        # between the steps is estimated. A delta is shown only should it ever not be ~0.
        off = f"; off by {e.steps_delta:.2g}" if abs(e.steps_delta) > 1e-6 else ""
        audio = _moved(e.audio_segments) or _moved(e.upload_audio_segments)
        video = _moved(e.video_frames) or _moved(e.upload_video_frames)
        steps = " and ".join(w for w, shown in (("segments", audio), ("keyframes", video)) if shown)
        lines.append(f"{steps.capitalize()}: Shapley values over which of them are kept, estimated from random "
                     f"orderings (more with \"thorough\"), so they add up to their part{off}.")
    return lines


def model_note(service) -> str:
    """How the served model scores, in one paragraph (zero-shot, hybrid or fine-tuned fusion)."""
    encoders = f"text: `{esc(service.config.text.model)}`, image: `{esc(service.config.image.model)}`"
    mix = service.active_model.mix
    if "collaborative" in mix:
        mixed = " + ".join(f"{esc(name)} {value:.2f}" for name, value in mix.items())
        return ("Scores come from a **hybrid model** (mix: " + mixed + "): a content part, the zero-shot "
                f"text and image similarity of pretrained encoders ({encoders}), plus a collaborative part, "
                "item-item weights learned from interactions (EASE with the items' content as side "
                "information) summed over your liked items, with a content-predicted prior for items nobody "
                "interacted with. A dislike keeps its item out and pushes its neighbours down.")
    if service.model_kind == "multimodal":
        return ("Scores come from a **fine-tuned multimodal model**: an item tower fuses text tokens, image "
                "regions and whole-item summaries with attention; a user tower attends over your liked items; "
                f"score = scaled cosine + item bias. Encoders: {encoders}. The text/image parts of a score are "
                "exact two-player Shapley values; the rest is the item's ID and bias part.")
    modalities = tuple(getattr(service.zeroshot_model, "modalities", ("text", "image")))
    terms = " + ".join(f"{m} weight × cosine({m})" for m in modalities)
    note = (f"Scores are `{terms}` between your profile (the mean of the liked items) and each item, using "
            f"pretrained encoders ({encoders}")
    if "audio" in modalities:
        note += f", audio: `{esc(service.config.audio.model)}` over ~2.3 s segments"
    if "video" in modalities:
        note += ", video: keyframes through the image encoder"
    note += ")."
    if len(modalities) > 2:
        note += " An item without a track or a clip scores on the modalities it has (its audio or video part is 0)."
    return note
