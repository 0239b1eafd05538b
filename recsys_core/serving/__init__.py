"""What answers a request: the zero-shot and fine-tuned models, the index, re-ranking, explanations (numbers only)."""
