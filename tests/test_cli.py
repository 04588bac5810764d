"""kit's command line as a newcomer first meets it: `kit --help` answers at once, listing every
command, without loading torch or pandas (seconds on a laptop, more on a shared Kaggle box)."""
import os
import subprocess
import sys

import pytest

from kit.cli import main

HELP = """
import sys
from kit.cli import main
try:
    main(["--help"])
except SystemExit as e:
    assert e.code == 0, e.code
print(" ".join(m for m in ("torch", "pandas", "accelerate", "matplotlib") if m in sys.modules), file=sys.stderr)
"""


def test_help_lists_every_command_and_loads_no_heavy_library():
    env = {**os.environ, "COLUMNS": "100"}               # argparse wraps its listing to the terminal
    done = subprocess.run([sys.executable, "-c", HELP], capture_output=True, text=True, check=True, env=env)
    assert done.stderr.strip() == ""                      # none of the heavy libraries was imported
    for command in ("data", "train", "recipe", "predict", "ensemble", "submit", "scores", "bench"):
        assert f"\n    {command} " in done.stdout


EVERY_MODULE = """
import importlib, pkgutil, sys
import kit
for m in pkgutil.walk_packages(kit.__path__, "kit."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)
print("torch.utils.cpp_extension" in sys.modules)
"""


def test_no_kit_module_loads_torchs_extension_builder_on_import():
    # torch.utils.cpp_extension warns on stderr at import on a machine with a CUDA toolkit and no GPU
    # (a Kaggle CPU notebook); torch's benchmark Timer imports it, so kit imports that only to time
    done = subprocess.run([sys.executable, "-c", EVERY_MODULE], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr[-2000:]
    assert "cpp_extension" not in done.stderr


def test_an_unknown_option_shows_the_usage_of_the_command_given(capsys):
    with pytest.raises(SystemExit) as e:
        main(["recipe", "run", "simple", "--bogus"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("usage: kit recipe run ")
    assert err.splitlines()[-1] == "kit recipe run: error: unrecognized arguments: --bogus"


@pytest.mark.parametrize("argv, named", [
    (["recipe", "run", "simple", "--data", ""], "--data"),        # before: generated data/demo here
    (["recipe", "run", "simple", "--runs", ""], "--runs"),        # before: run dirs in the current folder
    (["data", "info", ""], "dir"),
    (["scores", "--ledger", ""], "--ledger"),
    (["recipe", "run", "simple", "--only", ""], "--only"),
])
def test_an_empty_value_is_one_line_and_nothing_runs(argv, named, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    why = "a member's name, not ''" if named == "--only" else "a path '' would mean the current folder"
    assert capsys.readouterr().err.splitlines() == [f"kit: error: {named} '': an empty value ({why})"]
    assert list(tmp_path.iterdir()) == []


def test_member_minutes_too_short_to_train_are_refused_as_minutes_are(tmp_path, monkeypatch, capsys):
    """--member-minutes 0.001 trained each member 0.06 s and submitted a vote at chance; --minutes that
    leaves a member under 10 s was already refused."""
    monkeypatch.chdir(tmp_path)
    assert main(["recipe", "run", "simple", "--member-minutes", "0.001"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("kit: error: --member-minutes 0.001: under 10 seconds a member"), line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["recipe", "run", "simple"], ["bench", "--accuracy", "--preset", "tiny"]])
def test_minutes_and_member_minutes_together_are_refused(tmp_path, monkeypatch, capsys, command):
    """Probe 17: both were taken and --minutes was silently ignored."""
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--minutes", "0.5", "--member-minutes", "0.4"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("kit: error: --minutes and --member-minutes: give one"), line
    assert list(tmp_path.iterdir()) == []


def test_a_name_that_is_not_utf8_is_shown_by_its_bytes(tmp_path):
    """Probe 50 F4: a folder named in another encoding was shown as d\\udce9 (Python's lone surrogate,
    which names no byte); it is shown as the byte it is, d\\xe9, on stdout and stderr alike."""
    odd = os.fsdecode(b"d\xe9")
    done = subprocess.run([sys.executable, "-m", "kit", "validate", f"{odd}/x.csv", "--data", odd], cwd=tmp_path,
                          capture_output=True, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert done.returncode == 2 and done.stderr.startswith(b"kit: error: d\\xe9: data dir not found"), done.stderr
    assert b"udce9" not in done.stderr
    from kit.cli import _as_bytes

    error = UnicodeEncodeError("ascii", "r\udce9\u2713", 1, 3, "not ascii")
    assert _as_bytes(error) == ("\\xe9\\u2713", 3)


@pytest.mark.parametrize("module", ["kit.train", "kit"])      # the recipe's workers (kit.kaggle's, the bench's alike)
def test_the_processes_kit_starts_import_kit_not_a_kit_folder_where_they_start(tmp_path, module):
    """Probe 58 F1: a folder named `kit` in the current folder (a clone seen from its parent, a notebook's
    working folder) was imported by `python -m kit.train` in place of kit, and every recipe member failed."""
    from kit.env import python_module

    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "train").mkdir()
    done = subprocess.run([*python_module(module), "--help"], cwd=tmp_path, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: "), done.stderr
