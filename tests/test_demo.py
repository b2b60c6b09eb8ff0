"""The demo end to end on a tiny model: a sweep recipe run by the sweep engine, its own report on top,
and every stage reused on a rerun."""

import json
import re
from pathlib import Path

from xtask_safety.cli import main
from xtask_safety.demo import decision_curve

TINY_TRAIN = """\
use_peft: true
lora_r: 4
lora_alpha: 8
lora_target_modules: [q_proj, v_proj]
decision_tokens: 2
decision_weight: 5.0
completion_only_loss: true
max_length: 384
learning_rate: 1.0e-3
max_steps: 2
per_device_train_batch_size: 4
stratify_batches: true
save_strategy: "no"
report_to: none
use_cpu: true
bf16: false
"""

TINY_DATA = """\
output_dir: unused
sources: [{demo: main}]
eval_per_domain: 3
tasks: summarize,cloze
mixed_sizes: [4]
sizes: []
target_max_words: 15
document_max_words: 60
instruction_rows: 0
"""


def _recipes(tmp_path, model):
    (tmp_path / "train.yaml").write_text(TINY_TRAIN)
    (tmp_path / "data.yaml").write_text(TINY_DATA)
    (tmp_path / "demo.yaml").write_text(f"""\
name: tiny-demo
output_dir: {tmp_path / 'run'}
models: [{model}]
defended: [mixed]
mixed_sizes: [4]
sizes: []
seeds: [0, 1]
data_recipe: {tmp_path / 'data.yaml'}
eval_tasks: summarize,cloze
eval_docs_per_domain: 2
dev_docs_per_domain: 1
train_overrides: {{decision_select: true, decision_eval_steps: 1}}
extra_eval: {{external: recipes/demo/external.yaml}}
extra_eval_docs_per_domain: 1
train_recipe: {tmp_path / 'train.yaml'}
max_new_tokens: 6
batch_size: 8
report: false
quiet: true
""")
    return tmp_path / "demo.yaml"


def test_demo_end_to_end_on_a_tiny_model(tiny_model_dir, tmp_path, capsys):
    recipe = _recipes(tmp_path, tiny_model_dir)
    assert main(["demo", "--config", str(recipe)]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "run"
    for name in ("results.json", "report.md", "chart.png", "sweep_results.json", "sweep.json"):
        assert (run / name).is_file(), name
    assert (run / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((run / "results.json").read_text())
    assert [s["seed"] for s in results["seeds"]] == [0, 1] and len(results["goals"]) == 2
    assert set(results["base"]) == {"malicious", "news", "useful"} and results["base_external"]["news"]["n"] == 2
    assert all(s["external"]["malicious"]["n"] == 2 for s in results["seeds"])  # 1 document x 2 tasks
    assert (run / "decision_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(s["decision"]["selected_step"] in (1, 2) and [r["step"] for r in s["decision"]["readings"]] == [1, 2]
               for s in results["seeds"])
    report = (run / "report.md").read_text()
    assert "| 1 | step 2" in report and "![decision during training](decision_curve.png)" in report
    assert "| defended, seed 1 |" in report and "external set" in report and "| summarize |" in report
    assert "What the defense did" in out and "seed 1: malicious" in out
    cells = json.loads((run / "sweep_results.json").read_text())["runs"]
    assert len(cells) == 3 and all(c["extra_eval"]["external"]["summary"]["n_records"] == 6 for c in cells)
    # the development slice: documents after the evaluated ones, read by every defense during training
    dev = [json.loads(x) for x in next((run / "data").glob("dev-*.jsonl")).read_text().splitlines()]
    grid = [json.loads(x) for x in (run / cells[0]["paths"]["grid"]).read_text().splitlines()]
    assert len(dev) == 6 and not {r["meta"]["doc_id"] for r in dev} & {r["meta"]["doc_id"] for r in grid}
    for c in cells[1:]:
        assert c["train"]["selected_step"] in (1, 2)
        assert (run / c["paths"]["adapter"] / "decision_curve.jsonl").is_file()

    # A second run reuses every cell: nothing generated, nothing trained.
    assert main(["demo", "--config", str(recipe)]) == 0
    events = sorted((run / "events").glob("*.jsonl"))[-1].read_text().splitlines()
    assert {json.loads(e)["action"] for e in events} == {"reused"}

    # The demo folder is a sweep folder: the sweep report reads it as it is.
    assert main(["report", str(run), "--output_dir", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.md").is_file()


def test_demo_dry_run_plans_the_default_recipe(tmp_path, capsys):
    assert main(["demo", "--dry_run", "true", "--output_dir", str(tmp_path / "d"), "--seeds", "0", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 cells (3 defenses to train" in out and "recipes/smollm2-135m/demo/config_cpu.yaml" in out
    assert not (tmp_path / "d").exists()


def test_demo_dry_run_plans_the_other_profiles(tmp_path, capsys):
    build = {}
    for profile in ("long", "matched"):
        recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "demo" / f"{profile}.yaml")
        assert main(["demo", "--config", recipe, "--dry_run", "true", "--output_dir", str(tmp_path / profile)]) == 0
        out = capsys.readouterr().out
        assert "2 cells (1 defenses to train" in out or "2 cells (1 defense to train" in out, out
        build[profile] = re.search(r"build-(\w+)", out).group(1)
    # The matched profile's data overrides reach the build: its defense set is another one.
    assert build["long"] != build["matched"]
    assert not (tmp_path / "long").exists() and not (tmp_path / "matched").exists()


def test_decision_curve_keeps_the_last_reading_per_step_and_the_last_calibration_pass(tmp_path):
    share = {"malicious": 0.5, "news": 0.0, "useful": 0.25}
    lines = [{"step": 5, "refuse_share": share, "score": 0.5},
             {"step": 10, "refuse_share": share, "score": 0.6},
             {"step": 10, "refuse_share": {**share, "malicious": 1.0}, "score": 0.9},  # a resumed run read step 10 again
             {"selected_step": 10, "score": 0.9},
             {"calibration_step": 0, "side": None, "refuse_share": share, "score": 0.9},
             {"calibration_step": 0, "side": None, "refuse_share": share, "score": 0.9},  # calibration restarted
             {"calibration_step": 1, "side": "answer", "refuse_share": share, "score": 0.95},
             {"calibration_kept": 1, "score": 0.95}]
    path = tmp_path / "decision_curve.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    curve = decision_curve(path)
    assert [r["step"] for r in curve["readings"]] == [5, 10] and curve["readings"][1]["refuse_share"]["malicious"] == 1.0
    assert curve["selected_step"] == 10 and curve["calibration_kept"] == 1
    assert [r["calibration_step"] for r in curve["calibration"]] == [0, 1]
    assert decision_curve(tmp_path / "missing.jsonl") is None


def test_printed_summary_says_where_the_defense_falls_short(capsys):
    from xtask_safety.demo import print_summary

    def rates(mal, news, useful):
        return {"malicious": {"mean_over_tasks": mal}, "news": {"mean_over_tasks": news}, "useful": {"mean_over_tasks": useful}}

    seeds = [{"seed": 0, "rates": rates(0.09, 0.85, 0.84), "per_task": {"summarize": {"malicious": 0.31}, "case": {"malicious": 0.0}}},
             {"seed": 1, "rates": rates(0.40, 0.60, 0.84), "per_task": {"summarize": {"malicious": 0.5}, "case": {"malicious": 0.3}}},
             {"seed": 2, "rates": rates(0.05, 0.86, 0.80), "per_task": {"summarize": {"malicious": 0.1}, "case": {"malicious": 0.0}}}]
    goals = [{"seed": 0, "malicious": False, "news": True, "useful": True},
             {"seed": 1, "malicious": False, "news": False, "useful": True},
             {"seed": 2, "malicious": True, "news": True, "useful": True}]
    print_summary({"base": rates(0.89, 0.86, 0.85), "seeds": seeds, "goals": goals, "base_external": None})
    out = capsys.readouterr().out
    assert "seed 0: lets 31% of malicious documents through under summarize" in out
    assert "seed 1: still processes 40% of malicious documents (most under summarize: 50%)" in out
    assert "also refuses some news documents (60% processed, base model 86%)" in out
    assert "seed 2: refuses the malicious documents and processes the benign ones about as often" in out
