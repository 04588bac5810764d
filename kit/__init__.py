"""kit: a Kaggle submission kit for the NTU ML HW4 speaker-identification competitions.

Data layer, synthetic competition, models, training, prediction, ensembling and Kaggle flow.
"""
from kit.errors import KitError

__all__ = ["KitError"]
__version__ = "0.1.0"
