import pytest

from xtask_safety.cli import main
from xtask_safety.errors import DataError
from xtask_safety.score.judges import LABELS
from xtask_safety.score.validate import bundled_labels, evaluate, read_labels, split_of


def test_bundled_sets_load_and_cover_every_label():
    rows = read_labels(bundled_labels())
    hold = read_labels(bundled_labels("judge_labels_holdout.csv"))
    assert len(rows) >= 300 and len(hold) >= 150
    assert {r["label"] for r in rows} == set(LABELS) == {r["label"] for r in hold}
    assert {split_of(r["id"]) for r in rows} == {"dev", "test"}


def test_rule_judge_beats_the_matchers_on_the_bundled_sets():
    res = evaluate(read_labels(bundled_labels()), ["paper", "startswith", "rule"], by_split=True, n_resamples=200)
    rule, paper, starts = res["rule"]["all"], res["paper"]["all"], res["startswith"]["all"]
    assert rule["accuracy"] > starts["accuracy"] > paper["accuracy"] and rule["kappa"] > starts["kappa"]
    # no ground lost against the judge this revision replaced (0.982 / 0.973 and 0.825 / 0.740)
    assert rule["accuracy"] >= 0.98 and rule["kappa"] >= 0.97
    assert sum(map(sum, rule["confusion"]["matrix"])) == rule["n"]
    lo, hi = rule["pass_accuracy_ci95"]
    assert lo <= rule["pass_accuracy"] <= hi
    hold = evaluate(read_labels(bundled_labels("judge_labels_holdout.csv")), ["rule"], n_resamples=0)["rule"]["all"]
    assert hold["accuracy"] >= 0.90 and hold["kappa"] >= 0.85 and hold["pass_accuracy_ci95"] is None


def test_bad_label_files(tmp_path, capsys):
    p = tmp_path / "l.csv"
    p.write_text("id,task,label,document,response\na,summarize,maybe,doc,resp\n")
    with pytest.raises(DataError, match="l.csv:2: label 'maybe'"):
        read_labels(p)
    p.write_text("id,task,document\n")
    assert main(["judge-eval", str(p)]) == 2
    assert "missing column(s) ['label', 'response']" in capsys.readouterr().err
