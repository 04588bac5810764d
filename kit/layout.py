"""The competition's files as the HW4 layout defines them: read metadata/testdata/mapping json
and check their structure, load one feature file safely, check every feature file.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kit.errors import KitError, first_line
from kit.fsio import read_json

LAYOUT_FILES = ("metadata.json", "testdata.json", "mapping.json")
# Written by `kit data synth` into a synthetic data dir (preset, seed, answer key, competition);
# never in the competition's own data. The one name every reader uses.
SYNTH_MARKER = ".kit-synth.json"


def synth_marker(data_dir: str | os.PathLike) -> dict | None:
    """A synthetic data dir's marker (preset, seed, answers, competition, ...), or None for real
    data; KitError naming the file when it is unreadable."""
    path = Path(data_dir) / SYNTH_MARKER
    if not path.is_file():
        return None
    marker = read_json(path, "kit's synthetic-data marker")
    wrong = [k for k in ("competition", "answers") if marker.get(k) is not None and not isinstance(marker[k], str)]
    if wrong:
        raise KitError(f"{path}: {wrong[0]} {marker[wrong[0]]!r} is not text (kit's synthetic-data marker, "
                       f"written by `kit data synth`)")
    return marker


def is_synthetic(data_dir: str | os.PathLike) -> bool:
    """Made by `kit data synth` (its marker is there): the quick budget and the answer key apply."""
    return (Path(data_dir) / SYNTH_MARKER).is_file()


@dataclass(frozen=True)
class Utterance:
    path: str                 # feature_path as written in the json (relative to the data dir)
    mel_len: int
    speaker: str | None       # None for test utterances


@dataclass
class Layout:
    data_dir: Path
    n_mels: int
    speakers: list[str]       # class index -> speaker id, from mapping.json
    train: list[Utterance]
    test: list[Utterance]

    @property
    def speaker2id(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.speakers)}

    @property
    def train_labels(self) -> list[int]:
        """The class index of each training utterance (read_layout gives every one a speaker)."""
        s2i = self.speaker2id
        return [s2i[u.speaker] for u in self.train if u.speaker is not None]

    @property
    def all(self) -> list[Utterance]:
        """Training then test utterances, in json order: the order of the packed store."""
        return self.train + self.test


# ---------------------------------------------------------------- reading the layout
def resolve_feature_path(data_dir: Path, feature_path: str, where: Path) -> Path:
    """The file a feature_path names, refusing absolute paths and ones escaping data_dir."""
    if not isinstance(feature_path, str) or not feature_path:
        raise KitError(f"{where}: feature_path {feature_path!r} is not a file name")
    if os.path.isabs(feature_path) or feature_path.startswith(("/", "\\")):
        raise KitError(f"{where}: feature_path {feature_path!r} is absolute; it must stay inside {data_dir}")
    try:
        root = data_dir.resolve()
        full = (root / feature_path).resolve()
    except (RuntimeError, OSError) as e:     # a link loop (RuntimeError before Python 3.13, OSError after)
        raise KitError(f"{where}: feature_path {feature_path!r}: {data_dir / feature_path} cannot be resolved "
                       f"(a symbolic link loop? {first_line(e)})") from None
    if full != root and root not in full.parents:
        link = " (a symbolic link out of it: copy the files, e.g. `cp -rL`)" if (root / feature_path).is_symlink() \
            else ""
        raise KitError(f"{where}: feature_path {feature_path!r} escapes the data dir {data_dir}{link}")
    return full


def _utterance(entry, where: Path, speaker: str | None, data_dir: Path) -> Utterance:
    if not isinstance(entry, dict) or "feature_path" not in entry or "mel_len" not in entry:
        raise KitError(f"{where}: each utterance needs feature_path and mel_len, got {str(entry)[:80]}")
    resolve_feature_path(data_dir, entry["feature_path"], where)
    mel_len = entry["mel_len"]
    if not isinstance(mel_len, int) or isinstance(mel_len, bool) or mel_len < 0:
        raise KitError(f"{where}: {entry['feature_path']}: mel_len {mel_len!r} is not a frame count")
    if mel_len == 0:
        raise KitError(f"{where}: {entry['feature_path']}: zero-length utterance (mel_len 0)")
    return Utterance(entry["feature_path"], mel_len, speaker)


def _check_id2speaker(i2s, speakers: list[str], map_path: Path) -> None:
    """mapping.json's id2speaker, where there is one, must say what speaker2id says: kit names classes
    by speaker2id, and a file whose two halves disagree was edited in one of them (which one is
    the user's to say)."""
    if i2s is None:
        return
    said = {str(k): v for k, v in i2s.items()} if isinstance(i2s, dict) else None
    wrong = [i for i, spk in enumerate(speakers) if (said or {}).get(str(i)) != spk]
    if said is None or wrong or len(said) != len(speakers):
        at = f"id {wrong[0]}: {(said or {}).get(str(wrong[0]))!r}, speaker2id says {speakers[wrong[0]]!r}" \
            if wrong and said is not None else "not an object of every id"
        raise KitError(f"{map_path}: id2speaker disagrees with speaker2id ({at}); mend the half that was edited")


def read_layout(data_dir: str | os.PathLike) -> Layout:
    """Read metadata/testdata/mapping json and check their structure (not the tensors)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise KitError(f"{data_dir}: data dir not found (run `kit data synth` or `kit data download`)")
    meta_path, test_path, map_path = (data_dir / n for n in LAYOUT_FILES)
    meta, testdata, mapping = (read_json(p, f"the competition's {p.name}") for p in (meta_path, test_path, map_path))

    if not isinstance(meta.get("speakers"), dict) or not meta["speakers"]:
        raise KitError(f"{meta_path}: 'speakers' must be a non-empty object of speaker -> utterances")
    if not isinstance(testdata.get("utterances"), list):
        raise KitError(f"{test_path}: 'utterances' must be a list")
    s2i = mapping.get("speaker2id")
    if not isinstance(s2i, dict) or not s2i:
        raise KitError(f"{map_path}: 'speaker2id' must be a non-empty object")
    n_mels = meta.get("n_mels")
    if not isinstance(n_mels, int) or isinstance(n_mels, bool) or n_mels <= 0:
        raise KitError(f"{meta_path}: n_mels {n_mels!r} must be a positive integer")
    if testdata.get("n_mels", n_mels) != n_mels:
        raise KitError(f"{test_path}: n_mels {testdata.get('n_mels')} differs from metadata's {n_mels}")

    ids = sorted(s2i.values()) if all(isinstance(v, int) for v in s2i.values()) else None
    if ids != list(range(len(s2i))):
        raise KitError(f"{map_path}: speaker2id values must be the integers 0..{len(s2i) - 1}")
    speakers = [""] * len(s2i)                  # every slot is filled: the ids are 0..n-1
    for spk, idx in s2i.items():
        speakers[idx] = spk
    _check_id2speaker(mapping.get("id2speaker"), speakers, map_path)

    train: list[Utterance] = []
    for spk, utts in meta["speakers"].items():
        if spk not in s2i:
            raise KitError(f"{meta_path}: speaker {spk} is missing from {map_path.name}")
        if not isinstance(utts, list):
            raise KitError(f"{meta_path}: speaker {spk}: expected a list of utterances")
        train.extend(_utterance(u, meta_path, spk, data_dir) for u in utts)
    test = [_utterance(u, test_path, None, data_dir) for u in testdata["utterances"]]
    if not train:
        raise KitError(f"{meta_path}: no training utterances")
    if not test:                                # a recipe would vote, and spend a submission on, a header
        raise KitError(f"{test_path}: lists no test utterances")
    seen: set[str] = set()
    for u in train + test:
        if u.path in seen:
            raise KitError(f"{data_dir}: feature_path {u.path} is listed twice")
        seen.add(u.path)
    return Layout(data_dir, n_mels, speakers, train, test)


# ---------------------------------------------------------------- reading feature files
def load_tensors(path: Path):
    """torch.load(path, weights_only=True) on the CPU with torch's warnings kept off stderr. The callers
    turn a damaged file into one error line; a garbage header made torch's unpickler warn first
    ("Detected pickle protocol 185 in the checkpoint ..." and its source line, above kit's error)."""
    # deferred: torch: the light entry points (`kit --help`, the Kaggle worker) import kit.layout
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


# Not warnings.catch_warnings() around the load: it swaps the process's filters, and check_data loads in
# threads, so one thread's exit restored them while another's load warned (a flaky line above the error).
warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.(_weights_only_unpickler|serialization)")


def load_feature(path: str | os.PathLike, n_mels: int | None = None, mel_len: int | None = None):
    """Load one uttr-*.pt safely (weights_only) and check shape and values; returns a tensor."""
    # deferred: torch: the light entry points (`kit --help`, the Kaggle worker) import kit.layout
    import torch

    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: feature file {'is a folder, not a file' if path.is_dir() else 'is missing'}")
    try:
        x = load_tensors(path)
    except pickle.UnpicklingError as e:
        with open(path, "rb") as f:
            head = f.read(2)
        pickled = head == b"PK" or head[:1] == b"\x80"      # torch's zip format, or a bare pickle
        if not pickled or "global" not in str(e).lower():    # random bytes fail the same unpickler
            raise KitError(f"{path}: unreadable or corrupt feature file (not a tensor file kit can read)") from None
        unsafe = [ln.strip() for ln in str(e).splitlines() if "global" in ln.lower()]
        raise KitError(f"{path}: refused to load, the file holds more than tensors "
                       f"(it could run code on load): {unsafe[0][:160]}") from None
    except Exception as e:  # torch raises many types for truncated/corrupt zips
        raise KitError(f"{path}: unreadable or corrupt feature file ({type(e).__name__}: "
                       f"{first_line(e)})") from None
    if not isinstance(x, torch.Tensor):
        raise KitError(f"{path}: expected a tensor, found {type(x).__name__}")
    if x.dim() != 2:
        raise KitError(f"{path}: expected a 2-D tensor (frames, n_mels), found shape {tuple(x.shape)}")
    if n_mels is not None and x.shape[1] != n_mels:
        raise KitError(f"{path}: second dimension is {x.shape[1]}, expected n_mels={n_mels}")
    if x.shape[0] == 0:
        raise KitError(f"{path}: zero-length utterance (0 frames)")
    if mel_len is not None and x.shape[0] != mel_len:
        raise KitError(f"{path}: has {x.shape[0]} frames but the json says mel_len {mel_len}")
    if not x.is_floating_point():
        raise KitError(f"{path}: expected float features, found {x.dtype}")
    if x.dtype not in (torch.float16, torch.float32, torch.float64):
        x = x.float()               # bfloat16 and the float8s: numpy (packing, digests) has no such type
    if not bool(torch.isfinite(x).all()):
        raise KitError(f"{path}: contains NaN or inf values")
    if x.dtype == torch.float64 and (big := float(x.abs().max())) > torch.finfo(torch.float32).max:
        raise KitError(f"{path}: values up to {big:.3g} are beyond float32's range, in which kit reads and trains")
    return x


def parallel_map(fn, items, workers: int | None, desc: str, progress: bool):
    """Map in a thread pool (torch.load releases the GIL in I/O), in order, with a progress bar."""
    from tqdm.auto import tqdm  # a widget in a notebook, the plain bar in a terminal

    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(workers) as pool:
        yield from tqdm(pool.map(fn, items), total=len(items), desc=desc, unit="utt",
                        disable=not progress, leave=False, mininterval=0.5)


def feature_digest(x) -> bytes:
    """SHA-1 of one utterance's values (a tensor or array) as float32: a packed store's content digest
    is the SHA-1 of these, in json order (kit.data), whatever the store's dtype."""
    import numpy as np  # deferred: the light entry points (`kit --help`, the Kaggle worker) import kit.layout

    return hashlib.sha1(np.ascontiguousarray(x, dtype=np.float32).tobytes()).digest()


def check_data(data_dir: str | os.PathLike, workers: int | None = None, progress: bool = True,
               largest: dict | None = None) -> tuple[Layout, str]:
    """Read the layout and every feature file; raise KitError naming the first bad file. Returns the
    layout and the files' content digest, as a packed store of them records it (`content`). largest:
    filled with the file holding the largest value and that value ({"path", "value"})."""
    layout = read_layout(data_dir)
    root = Path(data_dir)

    def check(u: Utterance) -> tuple[bytes, float, str]:
        x = load_feature(root / u.path, layout.n_mels, u.mel_len).numpy()
        return feature_digest(x), float(abs(x).max()) if x.size else 0.0, str(root / u.path)

    content, top = hashlib.sha1(), {"path": "", "value": 0.0}
    for digest, value, path in parallel_map(check, layout.all, workers, "checking", progress):
        content.update(digest)
        if value > top["value"]:
            top = {"path": path, "value": value}
    if largest is not None:
        largest.update(top)
    return layout, content.hexdigest()


DOWNLOAD_MARKER = ".kit-download.json"   # `kit data download`'s, in its --out: competition, zip, data dir


def marked_dir(out: Path, done: dict) -> Path:
    """The data dir a marker in `out` names: under out (`in_out`), or as older kits wrote it (relative to
    the folder they ran in)."""
    return out / done["in_out"] if "in_out" in done else Path(done["data_dir"])


def downloaded_from(data_dir) -> str | None:
    """The competition `kit data download` fetched data_dir from (its marker in data_dir or a folder a
    few levels above), or None: where a recipe on that data submits."""
    data_dir = Path(data_dir).resolve()
    for folder in [data_dir, *data_dir.parents][:4]:
        try:
            done = json.loads((folder / DOWNLOAD_MARKER).read_text())
            if isinstance(done, dict) and marked_dir(folder, done).resolve() == data_dir:
                return str(done["competition"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


# A course competition's Kaggle name, as the folder Kaggle mounts it in (/kaggle/input/<slug>/...)
COURSE_SLUG = re.compile(r"ml20\d\d(spring|fall)-?hw4")


def data_competition(data_dir) -> str | None:
    """The competition data_dir is: the one `kit data download` fetched it from (a stand-in's
    synthetic competition included, whatever name its marker says), the synthetic data's, or the
    one a folder holding it is named after (a Kaggle notebook's /kaggle/input/<slug>/Dataset;
    within three levels); None when none says."""
    found = downloaded_from(data_dir) or (synth_marker(data_dir) or {}).get("competition")   # fetched: from there
    if found:
        return found
    for path in (Path(data_dir).absolute(), Path(data_dir).resolve()):      # a link's own place first
        found = next((f.name for f in [path, *path.parents][:4] if COURSE_SLUG.fullmatch(f.name)), None)
        if found:
            return found
    return None
