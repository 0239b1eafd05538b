"""Gradio components with the app's own pre-processing."""

from __future__ import annotations

from typing import Any

import gradio as gr


def upload_image(**kwargs: Any) -> gr.Image:
    """``gr.Image(type="filepath", **kwargs)`` that hands the uploaded file's path to the handler unopened.

    Gradio's own pre-processing opens every upload with PIL before the handler runs, so a file that is not
    an image (a text file renamed ``.png``) failed there: a bare "Error" badge, no message, a traceback in
    the log. The service checks the file itself (size, pixels, format) with a message that says what is
    wrong (:func:`recsys_core.data.images.load_image`), so the path is all the handler needs.
    """
    image = gr.Image(type="filepath", **kwargs)
    # On the instance, not in a gr.Image subclass: Gradio writes a .pyi stub beside the module of every
    # component class it sees defined.
    gradio_preprocess = image.preprocess

    def preprocess(payload: Any) -> str | None:
        pasted = payload is not None and (payload.url or "").startswith("data:")  # Gradio decodes it to a file
        if payload is None or payload.path is None or pasted:
            return gradio_preprocess(payload)
        return str(payload.path)

    image.preprocess = preprocess  # type: ignore[method-assign]
    return image
