"""Gradio front end: layout, event handlers and rendering. No model math lives here."""
