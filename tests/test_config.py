"""Config layering: defaults <- each layer in turn (recipe base, member, budget, --set, flags), one
function for the recipe and the command line; an error names the layer that holds it."""
from __future__ import annotations

import pytest

from kit.config import TrainConfig, layered, parse_overrides
from kit.errors import KitError


def test_later_layers_win_tables_merge_and_defaults_fill_the_rest():
    cfg = layered(("base", {"train": {"lr": 0.1, "batch_size": 8}, "model": {"d_model": 32}}),
                  ("member", {"train": {"lr": 0.2}}),
                  ("--set", parse_overrides(["train.lr=3e-4", "model.pooling=sap"])))
    assert (cfg.train.lr, cfg.train.batch_size) == (3e-4, 8)            # --set wins; batch_size kept
    assert (cfg.model.d_model, cfg.model.pooling) == (32, "sap")
    assert cfg.train.max_steps == TrainConfig.max_steps                 # untouched: the default


def test_no_layers_is_the_defaults():
    assert layered().train == TrainConfig()


@pytest.mark.parametrize("layers,message", [
    ((("recipe.toml: [base]", {"train": {"lr": "fast"}}), ("member", {})),
     "recipe.toml: [base].train.lr: expected a number"),
    ((("base", {}), ("--set", {"train": {"batch_size": 0}})), "--set: train.batch_size = 0: must be > 0"),
    ((("base", {}), ("member m", {"model": {"d_modle": 3}})), "member m.model: unknown key(s) d_modle"),
    ((("t5/config.toml", {"model": {"d_model": "abc"}}),),        # probe 58 F6: t5/config.toml.model.d_model
     "t5/config.toml: model.d_model: expected a number, got the text 'abc'"),
])
def test_an_error_names_the_layer_that_holds_it(layers, message):
    with pytest.raises(KitError) as e:
        layered(*layers)
    assert message in str(e.value)


def test_a_bad_value_in_a_layer_is_refused_even_when_a_later_layer_replaces_it():
    with pytest.raises(KitError, match=r"\[base\]\.train\.lr"):
        layered(("[base]", {"train": {"lr": "fast"}}), ("member", {"train": {"lr": 0.1}}))


def test_sizes_that_decide_memory_have_an_upper_bound_at_load():
    from kit.config import MAXIMA

    at_cap = {section: {key: cap for key, cap in caps.items()} for section, caps in MAXIMA.items()}
    layered(("--set", at_cap))                                  # the bounds themselves are allowed
    with pytest.raises(KitError, match=r"--set: train\.batch_size = 65537: must be <= 65536"):
        layered(("--set", {"train": {"batch_size": 65537}}))
    with pytest.raises(KitError, match=r"member m: data\.segment_len = 100001: must be <= 100000"):
        layered(("member m", {"data": {"segment_len": 100001}}))


def test_a_seed_torch_could_not_take_is_refused_at_load():
    with pytest.raises(KitError, match=r"--set: train\.seed = \d+: must be <= 2147483647 "
                                       r"\(torch's seeds are 64-bit\)"):
        layered(("--set", {"train": {"seed": 99999999999999999999}}))
    with pytest.raises(KitError, match=r"data\.split_seed = 4294967296: must be <= 4294967295"):
        layered(("--set", {"data": {"split_seed": 2**32}}))


def test_a_quoted_number_in_a_toml_is_refused_and_a_set_value_is_read_as_toml_reads_it():
    """Probe 49 F6: `segment_len = "64"` in a recipe was taken as 64 without a word; `--set` values are
    text on the command line, read as TOML reads them, so `--set data.segment_len=64` is still the number."""
    from kit.config import parse_overrides

    with pytest.raises(KitError, match=r"member m\.data\.segment_len: expected a number, got the text '64' "
                                       r"\(leave out the quotes\)"):
        layered(("member m", {"data": {"segment_len": "64"}}))
    assert parse_overrides(["data.segment_len=64", "train.lr=3e-4", "model.encoder=conformer"]) == \
        {"data": {"segment_len": 64}, "train": {"lr": 3e-4}, "model": {"encoder": "conformer"}}
    cfg = layered(("--set", parse_overrides(["data.segment_len=64", "train.compile=true", "train.log_with="])))
    assert (cfg.data.segment_len, cfg.train.compile, cfg.train.log_with) == (64, True, "")


def test_a_number_where_text_belongs_is_refused_not_turned_into_other_text():
    """Probe 52 F4: `--set train.init_from=1e3` (read as TOML, a number) became the path "1000.0"."""
    from kit.config import parse_overrides

    with pytest.raises(KitError, match=r"--set\.train\.init_from: expected text, got 1000\.0 \(a float\); put it"):
        layered(("--set", parse_overrides(["train.init_from=1e3"])))
    assert layered(("--set", parse_overrides(['train.init_from="1e3"']))).train.init_from == "1e3"
