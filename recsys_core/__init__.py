"""Models, features and recommendations for the multimodal recommendation studio.

Importing this package loads no weights and touches no network or database: encoders are built
lazily on first use (see ``recsys_core.service.RecommenderService``).
"""

from recsys_core.errors import (
    CatalogError,
    EmptyProfileError,
    InvalidInputError,
    RecsysError,
    UnknownItemError,
)

__all__ = [
    "CatalogError",
    "EmptyProfileError",
    "InvalidInputError",
    "RecsysError",
    "UnknownItemError",
]
