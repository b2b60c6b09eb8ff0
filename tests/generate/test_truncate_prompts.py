"""``on_too_long="truncate"``: long documents are cut to the prompt budget; the instruction and the chat
template are kept, the cut is recorded in ``meta.truncation``, and rows that cannot fit are not dropped."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from xtask_safety.data.paper_release import import_eval_dir
from xtask_safety.errors import ConfigError, DataError
from xtask_safety.generate.base import SamplingConfig
from xtask_safety.generate.cli import main as generate_main
from xtask_safety.generate.run import generate_to_file
from xtask_safety.generate.transformers_backend import TransformersBackend
from xtask_safety.models import load_model
from xtask_safety.records import write_jsonl
from xtask_safety.tasks import TASK_NAMES

PAPER_CLONE = Path(__file__).resolve().parents[2] / "recipes" / "eval" / "fixtures" / "paper"

BUDGET = 300


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on a busy machine


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return TransformersBackend(load_model(tiny_model_dir), batch_size=8)


@pytest.fixture(scope="module")
def grid():
    """Two documents per domain of the paper-layout fixtures: one short, one of several hundred tokens."""
    recs = import_eval_dir(PAPER_CLONE).records
    return [r for r in recs if r.meta["paper_row"] < 2]


def _lengths(backend, recs):
    return backend.prompt_lengths([backend.render(r.prompt()) for r in recs])


def test_documents_are_cut_to_the_budget_and_the_cut_recorded(backend, grid, tmp_path, caplog):
    before = dict(zip([r.id for r in grid], _lengths(backend, grid), strict=True))
    over = {i for i, n in before.items() if n > BUDGET}
    assert 0 < len(over) < len(grid)  # some prompts fit, some do not
    out = tmp_path / "g.jsonl"
    rows = generate_to_file(grid, backend, out, SamplingConfig(max_new_tokens=4), progress=False,
                            on_too_long="truncate", max_prompt_tokens=BUDGET)
    assert f"{len(over)} of {len(grid)} prompt(s) had their document cut to fit {BUDGET} tokens" in caplog.text
    assert [r["id"] for r in rows] == [r.id for r in grid]
    by_id = {r.id: r for r in grid}
    pre, post = backend.render("\x00USER\x00").split("\x00USER\x00")
    for row in rows:
        rec = by_id[row["id"]]
        assert row["instruction"] == rec.instruction and row["response"] is not None  # instruction kept, answered
        cut = row["meta"].get("truncation")
        if row["id"] not in over:
            assert cut is None and row["document"] == rec.document
            continue
        shown = replace(rec, document=row["document"])
        n_after = _lengths(backend, [shown])[0]
        assert n_after <= BUDGET and row["meta"]["truncated"] is True
        assert cut["tokens_before"] == before[row["id"]] and cut["tokens_after"] == n_after and cut["budget"] == BUDGET
        assert cut["words_after"] < cut["words_before"] == len(rec.document.split())
        if rec.task == "cloze":  # the next sentence follows the end of the document: its end is kept
            assert rec.document.endswith(row["document"].split()[-1]) and cut["mode"] == "tail"
            assert rec.document.rstrip().endswith(row["document"].rstrip())
        else:
            assert rec.document.startswith(row["document"]) and cut["mode"] == "head"
        # the model saw the whole chat template around the cut document and the whole instruction
        # (joined by the released file's own separator)
        assert backend.render(shown.prompt()) == pre + row["document"] + rec.meta["paper_separator"] + rec.instruction + post
    settings = rows[0]["meta"]["generation"]
    assert settings["truncate_to"] == BUDGET
    # resuming with another budget would mix two sets of prompts in one file: refused
    with pytest.raises(DataError, match="other settings .*truncate_to"):
        generate_to_file(grid, backend, out, SamplingConfig(max_new_tokens=4), progress=False,
                         on_too_long="truncate", max_prompt_tokens=BUDGET + 40)


def test_the_budget_also_applies_to_error_and_skip(backend, grid, tmp_path):
    with pytest.raises(DataError, match=rf"prompts do not fit max_model_len \d+ with max_new_tokens 4 and "
                                        rf"max_prompt_tokens {BUDGET}.*--on_too_long truncate"):
        generate_to_file(grid, backend, tmp_path / "e.jsonl", SamplingConfig(max_new_tokens=4), progress=False,
                         max_prompt_tokens=BUDGET)
    rows = generate_to_file(grid, backend, tmp_path / "s.jsonl", SamplingConfig(max_new_tokens=4), progress=False,
                            on_too_long="skip", max_prompt_tokens=BUDGET)
    assert any(r["response"] is None for r in rows) and any(r["response"] is not None for r in rows)


def test_rows_that_cannot_fit_are_written_not_dropped(backend, grid, tmp_path):
    # a budget below the chat template + instruction alone: nothing can be cut enough
    tight = min(_lengths(backend, [replace(r, document="x") for r in grid])) - 1
    rows = generate_to_file(grid, backend, tmp_path / "t.jsonl", SamplingConfig(max_new_tokens=4), progress=False,
                            on_too_long="truncate", max_prompt_tokens=tight)
    assert len(rows) == len(grid)
    assert all(r["response"] is None and r["meta"]["generation"]["finish"] == "prompt_too_long" for r in rows)


def test_cli_flags(tiny_model_dir, grid, tmp_path, capsys):
    src = tmp_path / "grid.jsonl"
    write_jsonl(src, [r for r in grid if r.task in TASK_NAMES[:2]])
    out = tmp_path / "cli.jsonl"
    assert generate_main(["--input", str(src), "--output", str(out), "--model_name_or_path", tiny_model_dir,
                          "--max_new_tokens", "2", "--on_too_long", "truncate", "--max_prompt_tokens", str(BUDGET),
                          "--quiet", "true"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert any(r["meta"].get("truncated") for r in rows)
    with pytest.raises(ConfigError, match="--on_too_long.*invalid choice: 'cut'"):
        generate_main(["--input", str(src), "--output", str(out), "--on_too_long", "cut"])
    with pytest.raises(ConfigError, match="max_prompt_tokens: must be a positive"):
        generate_to_file(grid, None, tmp_path / "x.jsonl", SamplingConfig(), progress=False, max_prompt_tokens=0)
