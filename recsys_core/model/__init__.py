"""The fusion model and its inputs; ``checkpoint`` is the only code that knows a checkpoint folder's layout."""
