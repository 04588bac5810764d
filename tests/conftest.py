"""Shared fixtures: one tiny synthetic competition per test session.

`tiny_data` is the data dir (treat it as read-only: copy it with shutil.copytree before
changing anything); `tiny_answers` is its Kaggle-style answer key, kept outside the data dir.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from kit.cli import main

if TYPE_CHECKING:
    from kit.kaggle.server import StandIn


def pytest_collection_modifyitems(config, items):
    """Slow tests first: with -n 2, a 40 s test that starts last keeps one core busy while the
    other idles; started first, the short tests fill in around it."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)    # stable: file order kept


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


@pytest.fixture
def data(tiny_data, tmp_path) -> Path:
    """A private, writable copy of the tiny competition (its packed store left behind)."""
    return Path(shutil.copytree(tiny_data, tmp_path / "data", ignore=shutil.ignore_patterns(".kit-cache")))



def train_tiny_run(store, run_dir: Path) -> Path:
    """A small transformer trained 30 steps on `store` (a quarter of it held out) into run_dir."""
    from kit.config import RunConfig
    from kit.train import train

    cfg = RunConfig()
    cfg.data.data_dir, cfg.data.store_dtype, cfg.data.val_fraction = str(store.layout.data_dir), "float32", 0.25
    cfg.model.d_model, cfg.model.ffn_dim = 32, 64
    cfg.train.max_steps, cfg.train.eval_every, cfg.train.warmup_steps = 30, 15, 5
    cfg.train.batch_size, cfg.train.mixed_precision = 16, "no"
    cfg.infer.window, cfg.infer.hop = 64, 32
    train(cfg, run_dir, progress=False, store=store)
    return run_dir

@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread; on a busy machine two threads wait on each other.
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- tiny recipes
# What every tiny recipe shares: members that train in seconds on tiny_data, one thread each.
TINY_BASE = {"data": {"segment_len": 48, "store_dtype": "float32"},
             "model": {"d_model": 16, "ffn_dim": 32, "n_heads": 2},
             "train": {"batch_size": 16, "lr": 3e-3, "warmup_steps": 2, "cpu_threads": 1}}


def recipe_toml(members, name: str = "tiny", base: dict | None = None, budget: dict | None = None,
                after: dict | None = None) -> str:
    """A recipe's TOML: TINY_BASE with `base` merged in; members as names or dicts of dotted keys
    ({"name": "sap", "model.pooling": "sap"}); budget as {"quick": {"train.max_steps": 10}}."""
    import json

    from kit.config import merge

    def table(header: str, values: dict, prefix: str = "") -> list[str]:
        lines = [header] if header else []
        for key, value in values.items():
            if isinstance(value, dict):
                lines += table("", value, f"{prefix}{key}.")
            else:
                lines.append(f"{prefix}{key} = {json.dumps(value)}")
        return lines

    lines = [f"name = {json.dumps(name)}", *table("[base]", merge(TINY_BASE, base or {}))]
    for budget_name, values in (budget or {}).items():
        lines += table(f"[budget.{budget_name}]", values)
    lines += table("[after]", after or {"predict": False})
    for member in members:
        lines += table("[[members]]", {"name": member} if isinstance(member, str) else member)
    return "\n".join(lines) + "\n"


@pytest.fixture
def tiny_recipe(tmp_path):
    """write(*members, file="tiny.toml", **recipe_toml's keywords) -> the path of a tiny recipe in
    tmp_path (written again, same path, when called again)."""

    def write(*members, file: str = "tiny.toml", **kw) -> Path:
        path = tmp_path / file
        path.write_text(recipe_toml(members or ("mean",), **kw))
        return path

    return write


# ---------------------------------------------------------------- hand-made competitions and predictions
def json_layout(data_dir: Path, speakers: list[str], train: dict[str, list[str]], test: list[str],
                mel_len: int = 50) -> Path:
    """The three json files of a competition (no feature files: what validation and voting read).
    train: speaker -> feature paths."""
    import json

    data_dir.mkdir(parents=True, exist_ok=True)
    meta = {"n_mels": 40, "speakers": {s: [{"feature_path": p, "mel_len": mel_len} for p in train.get(s, [])]
                                       for s in speakers}}
    files = {"metadata.json": meta,
             "testdata.json": {"n_mels": 40, "utterances": [{"feature_path": p, "mel_len": mel_len} for p in test]},
             "mapping.json": {"speaker2id": {s: i for i, s in enumerate(speakers)},
                              "id2speaker": {str(i): s for i, s in enumerate(speakers)}}}
    for name, obj in files.items():
        (data_dir / name).write_text(json.dumps(obj))
    return data_dir


@pytest.fixture(name="json_layout")
def json_layout_fixture():
    """json_layout(data_dir, speakers, train, test, mel_len=50) -> data_dir: see json_layout."""
    return json_layout


def onehotish(pred, c: int = 3, p: float = 0.6):
    """Probabilities (N, c) with p on each predicted class and the rest spread evenly."""
    import numpy as np

    out = np.full((len(pred), c), (1 - p) / (c - 1))
    out[np.arange(len(pred)), pred] = p
    return out


class Predicted:
    """A json-only competition of 3 speakers, 6 validation and 4 test utterances, and predicted
    run dirs on it written by hand (`run`), as `kit predict` would leave them."""

    SPEAKERS = ["id10001", "id10002", "id10003"]
    TEST_IDS = [f"uttr-t{i}.pt" for i in range(4)]
    VAL_IDS = [f"uttr-v{i}.pt" for i in range(6)]
    VAL_LABELS = [0, 1, 2, 0, 1, 2]

    def __init__(self, root: Path):
        self.root = root
        train = {s: [p for p, lab in zip(self.VAL_IDS, self.VAL_LABELS, strict=True) if lab == k]
                 for k, s in enumerate(self.SPEAKERS)}
        self.data_dir = json_layout(root / "data", self.SPEAKERS, train, self.TEST_IDS)

    def run(self, name: str, val_pred, test, val_ids=None, **ids) -> Path:
        """A predicted run dir: val_pred classes (6,); test classes (4,) or probabilities (4, 3);
        an ids.json as old `kit predict` wrote it (no mode, no NLLs) plus `ids`."""
        import json

        import numpy as np

        run = self.root / name
        run.mkdir()
        test = np.asarray(test)
        np.save(run / "val_probs.npy", onehotish(val_pred).astype(np.float32))
        np.save(run / "test_probs.npy", (onehotish(test) if test.ndim == 1 else test).astype(np.float32))
        (run / "ids.json").write_text(json.dumps({
            "val": val_ids or self.VAL_IDS, "val_labels": self.VAL_LABELS, "test": self.TEST_IDS, "window": 256,
            "hop": 128, "full": False, "average": "probs", "which": "best", "data_dir": str(self.data_dir), **ids}))
        return run


@pytest.fixture
def predicted(tmp_path) -> Predicted:
    return Predicted(tmp_path)


# ---------------------------------------------------------------- the local Kaggle stand-in
def fake_kaggle_home(tmp_path: Path, monkeypatch, user: str, key: str, clear=(), **env: str) -> Path:
    """A private HOME with fake Kaggle credentials; the settings that would point the client
    elsewhere (a token, an endpoint, a proxy) and `clear` removed; retries in milliseconds; `env`:
    more variables to set."""
    home = tmp_path / "home"
    home.mkdir()
    for name in ("KAGGLE_API_TOKEN", "KIT_KAGGLE_ENDPOINT", "HTTP_PROXY", "http_proxy", "KAGGLE_API_ENVIRONMENT",
                 *clear):
        monkeypatch.delenv(name, raising=False)
    settings = {"HOME": str(home), "KAGGLE_CONFIG_DIR": str(home / "kaggle-config"), "KAGGLE_USERNAME": user,
                "KAGGLE_KEY": key, "KIT_KAGGLE_BACKOFF": "0.01", "KIT_KAGGLE_RETRIES": "3", **env}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return home


@pytest.fixture
def standin(tiny_data, tiny_answers):
    """The stand-in serving tiny_data as the default competition, stopped after the test."""
    from kit import DEFAULT_COMPETITION
    from kit.kaggle.server import StandIn

    with StandIn(tiny_data, tiny_answers, competition=DEFAULT_COMPETITION) as server:
        yield server


# ---------------------------------------------------------------- the CLI, as the fault tests call it
REPO = Path(__file__).resolve().parent.parent


def kit_env() -> dict:
    """The environment for `python -m kit` in a subprocess: this checkout first on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def process_alive(pid: int) -> bool:
    """Whether a process runs (a zombie or a dead one does not), from /proc."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def garbage(n: int) -> bytes:
    """n bytes of noise for a damaged file, the same every run (seeded, never os.urandom)."""
    return np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()


def kit_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code: int, err: str, *needles: str) -> str:
    """Exit 2 and exactly one stderr line, `kit: error: ...`, holding every needle."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("kit: error: "), (code, err)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ---------------------------------------------------------------- Kaggle: fake credentials, a submission
FAKE_KEY = "kitfakekey-DO-NOT-PRINT-4242"
FAKE_TOKEN = "kitfaketoken-NEVER-SHOWN-9191"
COMP = "ml2022spring-hw4"


@pytest.fixture
def kaggle_env(tmp_path, monkeypatch):
    # NO_PROXY: a usual corporate setting that would route the client around the stand-in; kit must clear it.
    return fake_kaggle_home(tmp_path, monkeypatch, "kit-test", FAKE_KEY, clear=("XDG_CONFIG_HOME",),
                            NO_PROXY="localhost,127.0.0.1", no_proxy="localhost,127.0.0.1", KIT_KAGGLE_POLL="0.01")


def write_submission(folder: Path, answers: Path, data_dir: Path, name: str = "sub", wrong_every: int = 4) -> Path:
    """A valid CSV from the answer key with every `wrong_every`-th answer changed, plus its manifest."""
    rows = list(csv.reader(answers.open()))[1:]
    speakers = sorted({r[1] for r in rows})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Id", "Category"])
        for i, (uid, spk, _) in enumerate(rows):
            wrong = wrong_every and i % wrong_every == 0
            w.writerow([uid, speakers[(speakers.index(spk) + 1) % len(speakers)] if wrong else spk])
    path.with_suffix(".json").write_text(json.dumps(
        {"members": ["runs/simple/m0", "runs/simple/m1"], "weights": [0.5, 0.5], "vote": "soft",
         "data_dir": str(data_dir)}))
    return path


@pytest.fixture
def sub(tmp_path, tiny_data, tiny_answers) -> Path:
    return write_submission(tmp_path / "submissions", tiny_answers, tiny_data)


def submit_args(sub: Path, standin: StandIn, *extra):
    return ["submit", sub, "-m", "test run", "--ledger", sub.parent / "ledger.csv", "--endpoint", standin.url, *extra]


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("kit: error:")]
    assert len(lines) == 1, err
    return lines[0]
