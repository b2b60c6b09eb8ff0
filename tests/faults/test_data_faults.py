"""SIGKILL during `xtask-safety data build` (recipe build) at four points; the rerun (same command) gives
the same bytes as an uninterrupted build, and no temporary directory is left behind."""

from __future__ import annotations

import shutil

from reliability_helpers import corpus_rows, data_recipe, jsonl, jsonl_ids, leftovers, run_killed, snapshot

from xtask_safety.cli import main

# point -> does the rerun need --overwrite (the killed run replaced an existing build)
POINTS = {"data.loaded": False, "data.write:3": False, "data.publish": False, "data.swap": True}


def test_killed_builds_rerun_to_the_same_bytes(tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(jsonl(*corpus_rows()), encoding="utf-8")

    def recipe(name: str, seed: int = 0):
        (tmp_path / name).mkdir()
        path = tmp_path / name / "recipe.yaml"
        path.write_text(data_recipe(tmp_path / name / "out", corpus, seed), encoding="utf-8")
        return path

    ref = recipe("ref")
    assert main(["data", "build", "--config", str(ref)]) == 0
    expected = snapshot(ref.parent / "out")
    sets = [k for k in expected if k.startswith("train/") and k.endswith(".jsonl")]
    assert len(sets) == 7 and "manifest.json" in expected and "eval/grid-paper.jsonl" in expected

    jobs, recipes = [], {}
    for point, overwrite in POINTS.items():
        r = recipes[point] = recipe(point.replace(":", "-"))
        argv = ["data", "build", "--config", str(r)]
        if overwrite:  # an older build (another seed) that the killed run was replacing
            assert main([*argv, "--seed", "7"]) == 0
            argv += ["--overwrite", "true"]
        jobs.append((point, argv))
    run_killed(jobs)
    capsys.readouterr()

    for point, overwrite in POINTS.items():
        r = recipes[point]
        out = r.parent / "out"
        before = sorted(p.name for p in r.parent.iterdir())
        if point == "data.swap":  # the old build was moved aside and the new one not yet renamed in
            assert not out.exists() and len(leftovers(r.parent)) == 2, before
        elif point in ("data.write:3", "data.publish"):
            assert not out.exists() and len(leftovers(r.parent)) == 1, before  # the half-written temp dir
        argv = ["data", "build", "--config", str(r)] + (["--overwrite", "true"] if overwrite else [])
        assert main(argv) == 0, f"{point}: rerun failed: {capsys.readouterr().err}"
        assert snapshot(out) == expected, f"{point}: the rerun differs from an uninterrupted build"
        assert leftovers(r.parent) == [], f"{point}: temporary files left: {leftovers(r.parent)}"
        for name in sets:  # every set complete, no duplicate ids
            ids = jsonl_ids(out / name)
            assert ids == jsonl_ids(ref.parent / "out" / name) and len(set(ids)) == len(ids)
        shutil.rmtree(r.parent)
