"""``python -m recsys_core.evaluate``: offline evaluation (see :mod:`recsys_core.evaluation.offline`)."""

from recsys_core.evaluation.offline import main

if __name__ == "__main__":
    raise SystemExit(main())
