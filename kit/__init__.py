"""kit: a Kaggle submission kit for the NTU ML HW4 speaker-identification competitions.

Data layer, synthetic competition, models, training, prediction, ensembling and Kaggle flow.
"""
from kit.errors import KitError

DEFAULT_COMPETITION = "ml2022spring-hw4"     # what --competition means when not given; 2021/2023 share the layout

__all__ = ["DEFAULT_COMPETITION", "KitError"]
__version__ = "0.1.0"
