"""Model-generated refusals: sampled answers are judged, only refusals are kept, and the count is reported."""

import json

from xtask_safety.data.builder import BuildConfig, build_defense_set, load_refusals
from xtask_safety.data.corpus import load_demo_corpus
from xtask_safety.data.refusals import apply_refusals, clean_answer, count_fallbacks, generate_refusals
from xtask_safety.score.judges import RuleJudge


def _rows():
    return build_defense_set(load_demo_corpus("main"), BuildConfig(tasks=["summarize", "cloze"], malicious_per_task=5,
                             benign_per_task=2), load_refusals())


def test_only_judged_refusals_are_kept_and_counted():
    rows = _rows()
    calls = []

    def generate(batch, attempt):  # refuses on the second attempt for every other row
        calls.append((len(batch), attempt))
        out = []
        for k, r in enumerate(batch):
            if attempt == 1 and k % 2 == 0:
                out.append(f"I'm sorry, but I can't {r.task} this document because it describes how to cause harm. "
                           "I can help with something else")
            else:
                out.append("Here is a brief summary: the text describes a plan in several steps.")
        return out

    rule = RuleJudge()
    accepted, report = generate_refusals(rows, generate, lambda r, t: rule(t, r.document, r.task, r.instruction).label,
                                         attempts=2)
    assert calls == [(10, 0), (10, 1)]  # malicious rows only; the second attempt retries the rejected ones
    assert report.requested == 10 and report.kept == 5 and report.generated == 20
    assert report.labels == {"comply": 15, "refuse": 5}
    assert all(t.endswith("harm.") for t in accepted.values())  # cut back to the last whole sentence
    count_fallbacks(rows, accepted, report, "pool")
    out = apply_refusals(rows, accepted, report, "pool")
    assert report.fallback == 5 and len(out) == len(rows)
    assert sum(r.meta.get("target_source") == "model" for r in out) == 5
    dropped = apply_refusals(rows, accepted, report, "drop")
    assert len(dropped) == len(rows) - 5 and all(r.id in accepted for r in dropped if r.is_malicious)
    assert [r for r in out if not r.is_malicious] == [r for r in rows if not r.is_malicious]


def test_clean_answer():
    assert clean_answer("  I can't help. This is cut mid") == "I can't help."
    assert clean_answer("No sentence end") == "No sentence end"


def test_cli_samples_refusals_with_a_model(tiny_model_dir, tmp_path, capsys):
    """The CLI wires the Transformers backend (sampling at 0.7) and the rule judge; a random tiny model
    never refuses, so every row keeps a pool refusal and the report says so."""
    from xtask_safety.data.cli import build_main as main

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"output_dir: {tmp_path / 'out'}\nsources: [{{demo: main}}]\ntasks: summarize,case\nsizes: [2, 3]\n"
        f"mixed_sizes: [1]\nbenign_ratio: 0\nrefusals: model\nrefusal_model: {tiny_model_dir}\n"
        "refusal_max_new_tokens: 6\nrefusal_attempts: 2\ndedup: exact\n"
    )
    assert main(["--config", str(recipe)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ref = summary["refusals"]
    # distinct malicious rows: summarize/case single sets (3 each) + the mixed set's rows not among them
    assert ref["mode"] == "model" and ref["requested"] >= 6 and ref["temperature"] == 0.7
    assert ref["answers_generated"] == 2 * ref["requested"] - ref["kept"]
    assert ref["kept"] + ref["fallback_pool"] == ref["requested"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["refusals"] == ref
