"""Learning from interactions and labels: the training loop, the data-parallel runtime, fine-tuning and its gate."""
