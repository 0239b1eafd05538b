"""Orchestration between the recommender (``recsys_core``) and the database (``storage``).

The model registry decisions (promote, roll back, reject), the background fine-tune job and the
labelling campaigns live here, so neither ``recsys_core`` nor ``storage`` has to know the other, and
the UI handlers only call these objects. Nothing here imports gradio.
"""
