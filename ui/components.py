"""Gradio components with the app's own pre-processing."""

from __future__ import annotations

from typing import Any

import gradio as gr


class UploadImage(gr.Image):
    """``gr.Image(type="filepath")`` that hands the uploaded file's path to the handler without opening it.

    Gradio's own pre-processing opens every upload with PIL before the handler runs, so a file that is not
    an image (a text file renamed ``.png``) failed there: a bare "Error" badge, no message, a traceback in
    the log. The service checks the file itself (size, pixels, format) with a message that says what is
    wrong (:func:`recsys_core.data.images.load_image`), so the path is all the handler needs.
    """

    is_template = True  # drawn by the frontend's Image component (Block.get_block_name)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["type"] = "filepath"
        super().__init__(*args, **kwargs)

    def preprocess(self, payload: Any) -> Any:
        if payload is None or payload.path is None or (payload.url or "").startswith("data:"):
            return super().preprocess(payload)  # nothing uploaded, or a pasted data URL Gradio decodes to a file
        return str(payload.path)
