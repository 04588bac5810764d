"""`--runs`, the folder a recipe's run dirs go under (RUNS/<recipe>/<member>): what it must not be, checked in one
line before any work. Moved out of kit.runs (its run-dir rules stay there)."""
from __future__ import annotations

from pathlib import Path

from kit.errors import KitError
from kit.runs import RECIPE_LOCK, holds_run, is_run_dir


def check_runs_folder(runs: str | Path) -> None:
    """`--runs`, the folder a recipe's run dirs go under, is never a run dir, a competition's data dir or a
    folder holding a ledger (submissions/): probe 51, a recipe's training went into each without a word,
    where `kit ensemble --out` and `kit train --out` refuse such folders), nor a recipe's own folder under
    it (RUNS/<recipe>). One line, before any work."""
    path = Path(runs)
    what = ("a run dir" if is_run_dir(path) or holds_run(path) else
            "a competition's data dir" if any((path / n).is_file() for n in ("metadata.json", "mapping.json",
                                                                              "testdata.json")) else
            "a folder of submissions (it holds ledger.csv)" if (path / "ledger.csv").is_file() else None)
    if what:
        raise KitError(f"--runs {runs}: {what}; a recipe's run dirs go in a folder of their own (the default "
                       "is runs/)")
    if (path / RECIPE_LOCK).is_file():     # probe 52 F5: --runs runs/boss trained a second boss in runs/boss/boss
        raise KitError(f"--runs {runs}: a recipe's own folder (it holds {RECIPE_LOCK}); --runs names the folder "
                       f"above it, where each recipe has its own, named as the recipe: --runs {path.parent} (a copy "
                       "under another name: rename it to the recipe's name first, or its runs are not used)")


def check_not_recipes_folder(runs: str | Path, recipe: str, members, copied=()) -> None:
    """`--runs` at recipe `recipe`'s own folder without its lock (a hand copy of its member run dirs, an
    older kit's runs): the folder is named as the recipe and holds a run dir named as one of its `members`
    (probe 53 F2: a second recipe was trained in runs/zoo/zoo), or, under any name, holds run dirs of its
    members trained from its settings (`copied`, kit.members.trained_as_members: probe 55, a renamed copy), or
    holds any run dir a recipe trained (trained_by_a_recipe: a copy made before the recipe was edited).
    One line, before any work."""
    path = Path(runs)
    if path.resolve().name == recipe:
        held = [name for name in members if is_run_dir(path / name)]
        if held:
            raise KitError(f"--runs {runs}: recipe {recipe}'s own folder (it holds the run dir of its member "
                           f"{held[0]}); --runs names the folder above it, where each recipe has its own: "
                           f"--runs {path.parent}")
    elif copied:
        raise KitError(f"--runs {runs}: holds the run dirs of recipe {recipe}'s member(s) {', '.join(copied)}, "
                       f"trained from its settings (a copy of its folder under another name?); kit keeps a recipe's "
                       f"members in RUNS/{recipe}/: to go on with these, rename the folder to {recipe} and give "
                       f"--runs {path.parent}, or give --runs a folder without them")
    if trained := trained_by_a_recipe(path):     # probe 56 MED 1 / LOW 1: a copy after the recipe was edited
        raise KitError(f"--runs {runs}: a recipe's own folder or a copy of one (it holds run dirs a recipe trained: "
                       f"{', '.join(trained[:3])}{', ...' if len(trained) > 3 else ''}, each with the member.toml "
                       f"kit recipe run writes); --runs names the folder above a recipe's own: to go on with these, "
                       f"rename the folder to the recipe's name and give --runs {path.parent}, or give --runs a "
                       "folder without them")


def trained_by_a_recipe(folder: str | Path) -> list[str]:
    """The folders directly in `folder` that a recipe trained as its members: kit.workers writes member.toml
    into each before its trainer starts (and the launchers' pulled runs keep it); `kit train` never does. A
    recipe's runs are RUNS/<recipe>/<member>, so a --runs folder holding them is a recipe's own folder."""
    path = Path(folder)
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.is_dir() and (p / "member.toml").is_file())
