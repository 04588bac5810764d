"""`python -m kit.kaggle` runs the worker, as `python -m kit.kaggle.worker` does."""
import sys

from kit.kaggle.worker import main

sys.exit(main())
