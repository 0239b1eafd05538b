"""A small hybrid checkpoint for a test catalog: seeded interactions, fitted and saved as the trainer saves one.

The tiny catalog (tests/conftest.py) gets two tastes: people who play board games also play the card game
(which its content alone puts far from chess), and people who play one arcade game play the other. So the
collaborative part moves scores the content part alone would not. Two items nobody played are left cold, so
their content-predicted priors (z-scored over the cold items) are not 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from recsys_core.model.checkpoint import save_hybrid
from recsys_core.model.hybrid import HybridConfig, with_scales
from recsys_core.training.hybrid import content_scores, fit_hybrid, interaction_matrix

# Item ids of each taste on the tiny catalog; "puzzle" and "noimage" stay without interactions (cold items).
TINY_TASTES = (("chess", "checkers", "cards"), ("space", "racer"))
# Content 0.6, collaborative 0.4: both parts visible in every score. lambda_ is small for 7 items and a few
# dozen users (the product's 500 is for catalogs of hundreds of items and thousands of interactions); a cold
# item's prior comes from its 2 nearest warm items (with all 5 the two cold items would get the same one).
TINY_CONFIG = HybridConfig(lambda_=2.0, side_content=1.0, side_genre=1.0, content_share=0.6, prior_weight=0.2,
                           prior_neighbours=2, selected_on="tests")


def taste_interactions(tastes: Sequence[Sequence[str]], users_per_taste: int = 12, per_user: int = 2,
                       seed: int = 0) -> pd.DataFrame:
    """``users_per_taste`` users per taste, each with ``per_user`` of its items (seeded): user_id, item_id, timestamp."""
    rng = np.random.default_rng(seed)
    rows = []
    for t, taste in enumerate(tastes):
        for u in range(users_per_taste):
            for n, item in enumerate(rng.choice(list(taste), size=min(per_user, len(taste)), replace=False)):
                rows.append({"user_id": f"t{t}u{u}", "item_id": str(item), "timestamp": 1_700_000_000 + 10 * u + n})
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def save_hybrid_checkpoint(service, folder: Path, frame: pd.DataFrame | None = None,
                           config: HybridConfig = TINY_CONFIG) -> Path:
    """Fit the hybrid on ``frame`` (default: :data:`TINY_TASTES`) over ``service``'s catalog and zero-shot model,
    with each part's scale measured on the interactions (as selection does), and save it to ``folder``."""
    frame = taste_interactions(TINY_TASTES) if frame is None else frame
    catalog, zeroshot = service.catalog, service.zeroshot_model
    fitted = fit_hybrid(frame, catalog, zeroshot, config)
    matrix, _ = interaction_matrix(frame, catalog)
    scaled = with_scales(config, content_scores(zeroshot, matrix), fitted.collab.scores(matrix))
    save_hybrid(Path(folder), config=scaled, zeroshot=zeroshot.config.to_dict(), collab=fitted.collab,
                item_ids=catalog.ids, frame=frame, metrics={"note": "test fixture"},
                fingerprint_info={"interactions": len(frame), "items": len(catalog)},
                encoders={"text": service.config.text.model, "image": service.config.image.model})
    return Path(folder)
