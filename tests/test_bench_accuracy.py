"""The accuracy bench: a recipe and the course sample at the same wall time, scored with the key."""
import json
import textwrap

from kit.bench_accuracy import run_accuracy_bench

RECIPE = """
name = "pair"
[base.data]
segment_len = 48
store_dtype = "float32"
[base.model]
d_model = 16
ffn_dim = 32
n_heads = 2
pooling = "stats"
head = "linear"
head_bn = true
[base.train]
batch_size = 16
lr = 3e-3
warmup_steps = 2
max_steps = 40
cpu_threads = 1
[[members]]
name = "tfm"
[[members]]
name = "cnn"
model.encoder = "resnet"
model.channels = 4
model.resnet_depth = 10
[after]
ensemble = "auto"
which = "last"
"""


def test_accuracy_bench_scores_members_ensemble_and_course_sample(tiny_data, tmp_path):
    recipe = tmp_path / "pair.toml"
    recipe.write_text(textwrap.dedent(RECIPE))
    result = run_accuracy_bench(str(recipe), data=str(tiny_data), out=tmp_path, runs=tmp_path / "runs",
                                per_member_minutes=0.02, course_minutes=0.05)
    kinds = [r["kind"] for r in result["rows"]]
    assert kinds == ["member", "member", "ensemble", "baseline"]
    for row in result["rows"]:
        assert 0.0 <= row["public"] <= 1.0 and 0.0 <= row["private"] <= 1.0
    course = result["rows"][-1]
    assert 0 < course["minutes"] < 0.5                 # the time it was given (by default the recipe's)
    assert "gain_over_best_member" in result and "private_over_course" in result
    saved = json.loads((tmp_path / "bench_accuracy.json").read_text())
    assert saved["rows"] == result["rows"]
    md = (tmp_path / "bench_accuracy.md").read_text()
    assert "course sample (same wall time)" in md and "ensemble vs best member" in md
    assert not (tmp_path / "submissions").exists()            # nothing written outside the bench's runs dir
