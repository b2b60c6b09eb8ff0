"""Sweep recipes parse; the grid, --dry-run, --emit-slurm and --cells; bad recipes fail in one line."""

from pathlib import Path

import pytest
import yaml
from sweep_helpers import write_sweep

from xtask_safety.cli import main as cli_main
from xtask_safety.errors import ConfigError
from xtask_safety.records import Record
from xtask_safety.sweep.cli import load_plan, passthrough_flags
from xtask_safety.sweep.config import select_cells, weighting_flags, weighting_label
from xtask_safety.sweep.stages import subsample_grid

REPO = Path(__file__).resolve().parents[2]
SWEEPS = sorted((REPO / "recipes" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("recipe", SWEEPS, ids=lambda p: p.name)
def test_every_sweep_recipe_parses_and_plans(recipe, tmp_path):
    plan, _ = load_plan(["--config", str(recipe), "--output_dir", str(tmp_path)])
    args = plan.args
    n_single = sum(1 for d in args.defended if d != "mixed") * len(args.sizes) * len(args.weightings) * len(args.seeds)
    n_mixed = ("mixed" in args.defended) * len(args.mixed_sizes) * len(args.weightings) * len(args.seeds)
    assert len(plan.cells) == len(args.models) * (1 + n_single + n_mixed)
    assert plan.train_recipe.is_file() and set(plan.keys) == {c.id for c in plan.cells}
    assert yaml.safe_load(recipe.read_text())["name"] == recipe.stem


def test_the_demo_sweep_fits_the_cpu_budget():
    plan, _ = load_plan(["--config", str(REPO / "recipes" / "sweeps" / "demo-smollm2.yaml")])
    # ~100 training steps of 8 rows (a refusal row and a benign row per refusal) and <= 8 evaluations of ~80 prompts
    steps = sum(-(-2 * c.defense_rows // 8) for c in plan.cells if not c.is_base)
    assert steps <= 100 and len(plan.cells) <= 8
    docs = plan.args.eval_docs
    assert sum(docs.values()) * len(plan.args.eval_task_list) <= 80


def test_dry_run_prints_the_plan_and_the_launch_commands(tmp_path, small_corpus, capsys):
    cfg = write_sweep(tmp_path, "/nonexistent/tiny", small_corpus)
    assert cli_main(["sweep", "--config", str(cfg), "--dry-run", "--launcher", "accelerate",
                     "--accelerate_config", "cpu_ddp", "--weightings", "uniform", "ratio:0.7"]) == 0
    out = capsys.readouterr().out
    assert "7 cells (6 defenses to train, 1 base" in out
    assert out.count("accelerate launch --config_file") == 6 and "cpu_ddp.yaml" in out
    assert "tiny__summarize-n4-ratio-0.7-s0" in out and "sweep_recipe.yaml" in out
    assert not (tmp_path / "sweep").exists()  # a dry run writes nothing


def test_emit_slurm_writes_an_array_with_one_task_per_cell(tmp_path, small_corpus):
    cfg = write_sweep(tmp_path, "/nonexistent/tiny", small_corpus)
    script = tmp_path / "sweep.sbatch"
    assert cli_main(["sweep", "--config", str(cfg), "--emit-slurm", str(script), "--max_new_tokens", "8",
                     "--slurm_args", "time=01:00:00", "--slurm_max_parallel", "2"]) == 0
    text = script.read_text()
    assert "#SBATCH --array=0-3%2" in text and "#SBATCH --time=01:00:00" in text and "#SBATCH --gres=gpu:1" in text
    assert '--max_new_tokens 8' in text and '--cells "$SLURM_ARRAY_TASK_ID" --report false' in text
    assert "--emit-slurm" not in text and (tmp_path / "sweep" / "slurm").is_dir()
    assert text.index("#SBATCH") < text.index("set -euo pipefail")


def test_cells_select_by_index_or_id(tmp_path, small_corpus):
    plan, _ = load_plan(["--config", str(write_sweep(tmp_path, "/x/tiny", small_corpus))])
    picked = select_cells(plan.cells, ["1", "tiny__mixed-n1-uniform-s0"])
    assert [c.id for c in picked] == ["tiny__summarize-n2-uniform-s0", "tiny__mixed-n1-uniform-s0"]
    with pytest.raises(ConfigError, match="index 9 is out of range"):
        select_cells(plan.cells, ["9"])
    assert passthrough_flags(["--config", "a.yaml", "--sizes", "1", "2", "--dry-run", "--cells", "3"]) == \
        ["--sizes", "1", "2"]


def test_keys_change_only_where_inputs_change(tmp_path, small_corpus):
    cfg = write_sweep(tmp_path, "/x/tiny", small_corpus)
    a, _ = load_plan(["--config", str(cfg)])
    b, _ = load_plan(["--config", str(cfg), "--max_new_tokens", "9"])
    c, _ = load_plan(["--config", str(cfg), "--train_overrides", '{"learning_rate": 0.01}'])
    cell = "tiny__summarize-n2-uniform-s0"
    assert a.keys[cell]["train"] == b.keys[cell]["train"] and a.keys[cell]["generate"] != b.keys[cell]["generate"]
    assert a.keys[cell]["train"] != c.keys[cell]["train"] and a.data_key == c.data_key
    d, _ = load_plan(["--config", str(cfg), "--output_dir", str(tmp_path / "elsewhere"), "--name", "other"])
    assert d.keys == a.keys  # names and folders are not inputs


def test_weighting_specs():
    assert weighting_flags("ratio:0.3") == {"weighting": "ratio", "defense_ratio": 0.3}
    assert weighting_flags("per_task:summarize=2,translate=1")["task_weights"] == {"summarize": 2.0, "translate": 1.0}
    assert weighting_label("per_task:summarize=2,translate=1") == "per_task-summarize2+translate1"
    for bad in ("nope", "ratio:2", "uniform:3", "per_task:"):
        with pytest.raises(ConfigError):
            weighting_flags(bad)


@pytest.mark.parametrize("override, message", [
    (["--defended", "summarize", "poetry"], "defended: unknown task 'poetry'"),
    (["--defended", "case"], "not in eval_tasks"),
    (["--weightings", "loud"], "unknown strategy 'loud'"),
    (["--sizes", "0"], "sizes: expected positive integers"),
    (["--train_overrides", '{"seed": 3}'], "train_overrides.seed: set by the sweep"),
    (["--data_overrides", '{"sizes": [3]}'], "data_overrides.sizes: set by the sweep"),
    (["--data_overrides", '{"colour": 1}'], "unknown data recipe key"),
    (["--eval_docs_per_domain", "malicious=2,poems=1"], "no evaluation documents of domain"),
    (["--train_recipe", "missing.yaml"], "train_recipe: missing.yaml not found"),
    (["--primary_judge", "llm"], "primary_judge: 'llm' is not among judges"),
])
def test_bad_sweep_settings_are_one_line_errors(override, message, tmp_path, small_corpus, capsys):
    cfg = write_sweep(tmp_path, "/x/tiny", small_corpus)
    code = cli_main(["sweep", "--config", str(cfg), "--dry-run", *override])
    if "poems" in override[-1]:  # found when the grid is cut, i.e. when the sweep runs
        code = cli_main(["sweep", "--config", str(cfg), *override])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_grid_subsample_keeps_whole_documents():
    grid = [Record(id=f"{d}{k}:{t}", task=t, domain=dom, document="x", instruction="y", meta={"doc_id": f"{d}{k}"})
            for d, dom in (("m", "malicious"), ("n", "news")) for k in range(3) for t in ("summarize", "case")]
    out = subsample_grid(grid, {"malicious": 2, "news": 1})
    assert sorted({r.meta["doc_id"] for r in out}) == ["m0", "m1", "n0"] and len(out) == 6
    assert len(subsample_grid(grid, 1)) == 4 and subsample_grid(grid, None) == grid
    with pytest.raises(ConfigError, match="asked for"):
        subsample_grid(grid, 4)
