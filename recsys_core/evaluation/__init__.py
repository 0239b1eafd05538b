"""Offline protocols, metrics and baselines (the small ``fit``/``score`` contract)."""
