"""Shared fixtures: one tiny synthetic competition per test session.

`tiny_data` is the data dir (treat it as read-only: copy it with shutil.copytree before
changing anything); `tiny_answers` is its Kaggle-style answer key, kept outside the data dir.
"""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> tuple[Path, Path]:
    from kit.synth import generate

    data_dir = tmp_path_factory.mktemp("synth") / "tiny"
    answers = generate(data_dir, preset="tiny", seed=0)
    return data_dir, answers


@pytest.fixture(scope="session")
def tiny_data(tiny_synth) -> Path:
    """Data dir of the tiny preset: 8 speakers x 12 training utterances, 20 test utterances."""
    return tiny_synth[0]


@pytest.fixture(scope="session")
def tiny_answers(tiny_synth) -> Path:
    """Answer key (Id,Category,Usage) of tiny_data."""
    return tiny_synth[1]
