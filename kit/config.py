"""The dataclasses a recipe member fills in: the one place each default lives.

Recipes override these defaults; the CLI (`--set section.key=value`) overrides the recipe;
`layered` is the one function that stacks them.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:                               # Python 3.10: the same parser, as a package (a dependency there)
    import tomli as tomllib

from kit.errors import KitError


@dataclass
class DataConfig:
    data_dir: str = "data/demo"
    segment_len: int = 128          # frames per random training crop
    val_fraction: float = 0.1
    split_seed: int = 0
    store_dtype: str = "float16"    # float16 | float32
    store_on_gpu: bool = True       # on a GPU, copy the packed store there once (full preset: 2.8 GiB)
    pseudo_labels: str = ""         # CSV Id,Category of test utterances trained on as labelled (`kit pseudo`)
    allow_external_labels: bool = False  # train on a pseudo_labels CSV `kit pseudo` did not write (no pseudo.json)
    train_on_val: bool = False      # also train on the validation split (a recipe's refit, kit.rounds): its
                                    # evaluations are then on utterances it trained on, not held out


# What kind of network each encoder (ModelConfig.encoder) is: an audition keeps the best of each kind
# first (kit.audition.survivors_of), since a vote gains most from members that make different mistakes.
ENCODER_KINDS = {"transformer": "attention", "conformer": "attention", "resnet": "convolution", "ecapa": "convolution"}


@dataclass
class ModelConfig:
    encoder: str = "transformer"    # transformer | conformer | resnet | ecapa (kit.models.ENCODERS)
    d_model: int = 80               # transformer/conformer width; also the mlp head's hidden width
    n_layers: int = 1               # transformer/conformer layers
    n_heads: int = 2
    ffn_dim: int = 256
    dropout: float = 0.1            # transformer/conformer dropout (the CNNs have none)
    conv_kernel: int = 15           # conformer depthwise conv kernel
    channels: int = 32              # CNN width: resnet's first-stage channels (x2 per stage), ecapa's channels
    resnet_depth: int = 34          # resnet: 10 | 18 | 34, i.e. BasicBlocks per stage 1111 | 2222 | 3463
    pooling: str = "mean"           # mean | sap | sap+mean | stats | astp (kit.models.POOLINGS)
    head: str = "mlp"               # mlp (course sample) | linear | amsoftmax | aamsoftmax (kit.models.HEADS)
    head_bn: bool = False           # BatchNorm before the linear or margin head
    am_s: float = 30.0              # margin heads' scale s
    am_m: float = 0.2               # margin: amsoftmax s*(cos - m), aamsoftmax s*cos(theta + m) (radians)
    margin_warmup_steps: int = 0    # a margin head's m ramps 0 -> am_m over this many steps
    feature_norm: str = "none"       # none | cmn: each utterance's (crop's, window's) mean log-mel taken out
    n_mels: int = 40                # filled in from the data
    n_classes: int = 600            # filled in from the data


@dataclass
class AugmentConfig:
    specaugment: bool = False
    freq_masks: int = 2
    freq_width: int = 8
    time_masks: int = 2
    time_width: int = 20


@dataclass
class TrainConfig:
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    max_steps: int = 70000
    max_epochs: float = 0.0         # > 0: budget in epochs instead of steps
    grad_clip: float = 3.0
    ema: bool = False
    ema_decay: float = 0.999
    eval_every: int = 2000
    patience: int = 0               # evaluations without improvement before stopping; 0 = off
    average_last: int = 0           # average the last N checkpoints at the end; 0 = off
    mixed_precision: str = "auto"   # auto | no | bf16 | fp16
    seed: int = 0
    minutes: float = 0.0            # > 0: a time budget; the step total (at most max_steps), warm-up and
                                    # evaluations are fitted to it from the measured step rate, so the run
                                    # ends annealed; counts the time of every session of a resumed run
    evals: int = 4                  # evaluations over a time-budgeted run (the last at its end)
    max_minutes: float = 0.0        # > 0: stop cleanly with a checkpoint after this long (this session)
    stop_step: int = 0              # > 0: stop cleanly with a checkpoint at this step, the schedule kept
                                    # (an audition's cut in a step-based budget: kit.audition)
    fused_optimizer: bool = True    # torch's fused AdamW (one kernel for all parameters)
    compile: bool = False           # torch.compile the training model (GPU; minutes of compile on a CPU)
    fast_dropout: bool = True       # kit.layers' dropout: a CPU training step of the strong Conformer
                                    # spent ~37% of its time in torch's dropout random numbers
    cpu_threads: int = 0            # torch threads on CPU; 0 = torch's default. Tiny models run
                                    # several times faster on 1 thread, above all on a busy machine
    init_from: str = ""             # start from these weights (a .pt, or a run dir's last.pt): a fine-tune
    teacher: str = ""               # .npz of soft targets (ids, probs) on test utterances (`kit distill`)
    distill_weight: float = 0.5     # where a row has a label and a soft target: the soft target's weight
    label_smoothing: float = 0.0    # cross-entropy's label smoothing (0 = off)
    log_with: str = ""              # an experiment tracker through accelerate (TRACKERS), e.g. tensorboard;
                                    # "" = off. Its files go in the run dir's trackers/ (kit.train.trackers)


@dataclass
class InferConfig:
    window: int = 256               # frames per sliding window
    hop: int = 128                  # frames between window starts
    mode: str = "auto"              # auto (whole utterance or sliding windows, whichever has the lower
                                    # calibrated validation loss) | sliding | full
    full: bool = False              # true: one window = the whole utterance (overrides mode)
    average: str = "probs"          # probs | logits
    batch_size: int = 256


@dataclass
class RunConfig:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _coerce(value: Any, target_type: type, where: str) -> Any:
    if target_type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise KitError(f"{where}: expected true/false, got {value!r}")
    if target_type in (int, float):
        if isinstance(value, bool):
            raise KitError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, str):      # probe 49 F6: segment_len = "64" was taken as 64 without a word
            raise KitError(f"{where}: expected a number, got the text {value!r}"
                           + (" (leave out the quotes)" if _number(value) else ""))
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise KitError(f"{where}: expected a number, got {value!r}") from None
        if target_type is int:
            if not math.isfinite(number) or number != int(number):
                raise KitError(f"{where}: expected an integer, got {value!r}")
            return int(number)
        return number
    if not isinstance(value, str):      # probe 52: --set train.init_from=1e3 became the path "1000.0"
        raise KitError(f"{where}: expected text, got {value} (a {type(value).__name__}); put it in quotes "
                       "(in a file KEY = \"...\", on the command line --set 'SECTION.KEY=\"...\"')")
    return value


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _typed(text: str) -> Any:
    """A --set value as TOML reads it (3e-4 a number, true a boolean), else the text itself (conformer)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return text


def _at(where: str, key: str) -> str:
    """Where a key is: a layer's name and the key joined by a dot (member m.model), a file's by ': ' (probe 58
    F6: t5/config.toml.model.d_model)."""
    return f"{where}: {key}" if where.endswith((".toml", ".json")) else f"{where}.{key}"


def _fill(cls: type, values: dict, where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise KitError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    kwargs = {}
    for name, value in values.items():
        f = known[name]
        factory = f.default_factory
        if isinstance(factory, type) and dataclasses.is_dataclass(factory):
            if not isinstance(value, dict):
                raise KitError(f"{_at(where, name)}: expected a table")
            kwargs[name] = _fill(factory, value, _at(where, name))
        else:
            kwargs[name] = _coerce(value, type(f.default), _at(where, name))
    return cls(**kwargs)


# The range of each numeric setting, checked at load (every other number must just be finite).
POSITIVE, NON_NEGATIVE, OPEN_UNIT, HALF_OPEN_UNIT = "> 0", ">= 0", "in (0, 1)", "in [0, 1)"
CLOSED_UNIT = "in [0, 1]"
RANGES = {
    "data": {"segment_len": POSITIVE, "val_fraction": OPEN_UNIT, "split_seed": NON_NEGATIVE},
    "model": {"d_model": POSITIVE, "n_layers": POSITIVE, "n_heads": POSITIVE, "ffn_dim": POSITIVE,
              "dropout": HALF_OPEN_UNIT, "conv_kernel": POSITIVE, "channels": POSITIVE, "resnet_depth": POSITIVE,
              "am_s": POSITIVE, "am_m": NON_NEGATIVE, "margin_warmup_steps": NON_NEGATIVE,
              "n_mels": POSITIVE, "n_classes": POSITIVE},
    "augment": {"freq_masks": NON_NEGATIVE, "freq_width": NON_NEGATIVE, "time_masks": NON_NEGATIVE,
                "time_width": NON_NEGATIVE},
    "train": {"batch_size": POSITIVE, "lr": NON_NEGATIVE, "weight_decay": NON_NEGATIVE,
              "warmup_steps": NON_NEGATIVE, "max_steps": POSITIVE, "max_epochs": NON_NEGATIVE,
              "grad_clip": NON_NEGATIVE, "ema_decay": HALF_OPEN_UNIT, "eval_every": POSITIVE,
              "patience": NON_NEGATIVE, "average_last": NON_NEGATIVE, "seed": NON_NEGATIVE,
              "minutes": NON_NEGATIVE, "evals": POSITIVE, "max_minutes": NON_NEGATIVE, "stop_step": NON_NEGATIVE,
              "cpu_threads": NON_NEGATIVE, "distill_weight": CLOSED_UNIT,
              "label_smoothing": HALF_OPEN_UNIT},
    "infer": {"window": POSITIVE, "hop": POSITIVE, "batch_size": POSITIVE},
}
# Upper bounds on the sizes that decide memory: far above any useful value (the recipes use at
# most batch 64, 256 frames, width 1024), low enough that a typo of a few zeros is one line here
# rather than an allocation that grows until the kernel kills the process.
MAXIMA = {
    "data": {"segment_len": 100_000, "split_seed": 2**32 - 1},
    "model": {"d_model": 8192, "n_layers": 128, "n_heads": 128, "ffn_dim": 65536, "channels": 8192,
              "conv_kernel": 1025},
    "train": {"batch_size": 65536, "seed": 2**31 - 1},     # seed: torch seeds each rank with seed * 1000 + rank
    "infer": {"window": 100_000, "batch_size": 65536},
}
# accelerate's trackers by name (accelerate.utils.LoggerType less "all", which would log to whatever
# happens to be installed). Named here rather than imported: accelerate costs every command the
# import of torch; tests/test_trackers.py keeps the two lists in step.
TRACKERS = ("tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio")
# The values each enumerated setting may take, checked at load so that a typo is refused before
# any member trains. kit.infer.MODES and AVERAGES and kit.data.STORE_DTYPES are these tuples. The
# registries that map a name to code (kit.models' ENCODERS, POOLINGS, HEADS, kit.cnn.RESNET_BLOCKS,
# kit.train.devices.resolve_precision) import torch, which loading a config must not, so their names
# are repeated here: tests/test_input_trust.py keeps the two in step.
CHOICES: dict[str, dict[str, tuple]] = {
    "data": {"store_dtype": ("float16", "float32")},
    "model": {"encoder": tuple(ENCODER_KINDS), "pooling": ("mean", "sap", "sap+mean", "stats", "astp"),
              "head": ("mlp", "linear", "amsoftmax", "aamsoftmax"), "resnet_depth": (10, 18, 34),
              "feature_norm": ("none", "cmn")},
    "train": {"mixed_precision": ("auto", "no", "bf16", "fp16")},
    "infer": {"mode": ("sliding", "full", "auto"), "average": ("probs", "logits")},
}
# The checkpoints of a run dir that `kit predict --which` and a recipe's [after] which may name.
CHECKPOINTS = ("best", "last", "avg")
_IN_RANGE = {CLOSED_UNIT: lambda v: 0 <= v <= 1, POSITIVE: lambda v: v > 0, NON_NEGATIVE: lambda v: v >= 0,
             OPEN_UNIT: lambda v: 0 < v < 1, HALF_OPEN_UNIT: lambda v: 0 <= v < 1}


def validate(cfg: RunConfig, where: str = "config") -> RunConfig:
    """Refuse a non-finite number, or one outside its range (RANGES, MAXIMA), or a name that is not
    one of its choices (CHOICES, TRACKERS), naming the setting."""
    if cfg.train.log_with and cfg.train.log_with not in TRACKERS:
        raise KitError(f"{where}: train.log_with = {cfg.train.log_with!r}: not a tracker accelerate knows; "
                       f"choose {', '.join(TRACKERS)}, or leave it empty (off)")
    for section_name, choices in CHOICES.items():
        section_cfg = getattr(cfg, section_name)
        for key, allowed in choices.items():
            value = getattr(section_cfg, key)
            if value not in allowed:
                raise KitError(f"{where}: {section_name}.{key} {value!r}: choose one of "
                               f"{', '.join(map(str, allowed))}")
    for section in dataclasses.fields(cfg):
        table = getattr(cfg, section.name)
        if not dataclasses.is_dataclass(table):
            continue
        for f in dataclasses.fields(table):
            value = getattr(table, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            rule = RANGES.get(section.name, {}).get(f.name)
            if not math.isfinite(value):
                raise KitError(f"{where}: {section.name}.{f.name} = {value}: must be a finite number"
                               + (f" {rule}" if rule else ""))
            if rule and not _IN_RANGE[rule](value):
                raise KitError(f"{where}: {section.name}.{f.name} = {value!r}: must be {rule}")
            cap = MAXIMA.get(section.name, {}).get(f.name)
            if cap is not None and value > cap:
                why = "torch's seeds are 64-bit" if f.name.endswith("seed") else "more would not fit in memory"
                raise KitError(f"{where}: {section.name}.{f.name} = {value!r}: must be <= {cap} ({why})")
    return cfg


def from_dict(values: dict, where: str = "config") -> RunConfig:
    """Build a RunConfig from nested dicts, refusing unknown keys, ill-typed values and numbers
    out of range."""
    return validate(_fill(RunConfig, values, where), where)


def layered(*layers: tuple[str, dict]) -> RunConfig:
    """The defaults overridden by each (where, values) layer in turn: a recipe's base, member and
    budget tables, a member TOML, `--set`, the command line's flags. Later layers win; tables
    merge, values replace. Each layer is checked on its own first, so an error names the layer
    that holds it (its `where`)."""
    values: dict = {}
    for where, layer in layers:
        from_dict(layer, where)
        values = merge(values, layer)
    return from_dict(values)


def merge(base: dict, override: dict) -> dict:
    """Deep-merge `override` into a copy of `base` (tables merge, scalars replace)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(items: list[str]) -> dict:
    """Turn ["train.lr=3e-4", "model.encoder=conformer"] into nested dicts."""
    result: dict = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise KitError(f"override {item!r}: expected section.key=value, e.g. train.lr=3e-4")
        dotted, value = item.split("=", 1)
        node = result
        *parents, leaf = dotted.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise KitError(f"override {item!r}: {'.'.join(parents[:i + 1])} is a value, not a table")
        if isinstance(node.get(leaf), dict):
            raise KitError(f"override {item!r}: {dotted} is a table, not a value")
        node[leaf] = _typed(value)
    return result


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise KitError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise KitError(f"{path}: malformed TOML ({e})") from None
    except RecursionError:
        raise KitError(f"{path}: malformed TOML (nested too deeply to read)") from None
    except UnicodeDecodeError as e:         # TOML is UTF-8; tomllib decodes before it parses
        raise KitError(f"{path}: malformed TOML (not UTF-8 text: byte {e.object[e.start]:#04x} at "
                       f"offset {e.start})") from None


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def dump_toml(values: dict) -> str:
    """Serialise nested dicts of scalars/lists (what a RunConfig holds) as TOML."""
    lines: list[str] = []

    def emit(table: dict, prefix: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in table.items() if isinstance(v, dict)}
        if prefix and scalars:
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {_toml_value(v)}")
        if scalars:
            lines.append("")
        for k, v in tables.items():
            emit(v, f"{prefix}.{k}" if prefix else k)

    emit(values, "")
    return "\n".join(lines).rstrip() + "\n"
