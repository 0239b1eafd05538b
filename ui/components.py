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

    # Drawn by the frontend's Image component (Block.get_block_name). No __init__ of its own: Gradio reads
    # the component's props from the signature of its class's __init__.
    is_template = True

    def preprocess(self, payload: Any) -> Any:
        pasted = payload is not None and (payload.url or "").startswith("data:")  # Gradio decodes it to a file
        if self.type != "filepath" or payload is None or payload.path is None or pasted:
            return super().preprocess(payload)
        return str(payload.path)
