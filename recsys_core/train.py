"""``python -m recsys_core.train``: train the fusion model on interactions (see :mod:`recsys_core.training`)."""

from recsys_core.training.cli import main

if __name__ == "__main__":
    main()
