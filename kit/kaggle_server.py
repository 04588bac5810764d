"""Moved to kit.kaggle.server; this name stays so older imports keep working."""
from kit.kaggle.server import StandIn  # noqa: F401
