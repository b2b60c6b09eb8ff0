"""The four stages of a sweep cell, each keyed by a hash of its inputs (see :mod:`.cache`).

* data:     one ``xtask-safety data build`` (:func:`xtask_safety.data.pipeline.run_build`) for the whole
            sweep, plus the evaluation grid every cell answers (a per-domain subsample of its grid);
* train:    the cell's recipe (training recipe + overrides + the cell's model, set, weighting, seed) is
            written beside the adapter and trained in this process or under ``accelerate launch``; a
            finished adapter is reused, a killed one resumes from its last complete checkpoint;
* generate: :func:`xtask_safety.generate.run.generate_runs` (resumes record by record);
* score:    every judge, utility metrics and the pass tables (:mod:`xtask_safety.score.run`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xtask_safety.errors import ConfigError, DataError, XtaskError
from xtask_safety.resources import CHECKOUT, PACKAGE, recipe_path
from xtask_safety.sweep.cache import EventLog, SweepDir, file_lock, stage_key
from xtask_safety.sweep.config import Cell, SweepArguments, weighting_flags

logger = logging.getLogger(__name__)
TRAIN_DONE = "xtask_sweep_train.json"
CELL_RECIPE = "sweep_recipe.yaml"
# recipe keys that only name or track a run: they do not change what is trained
UNKEYED = ("output_dir", "train_file", "run_group", "run_tags", "resume", "wandb_project")
REPO = CHECKOUT or PACKAGE  # shown paths are relative to it (the checkout, else the installed package)


def log(msg: str) -> None:
    logger.info(f"[xtask-safety sweep] {msg}")


def resolve_file(path: str, what: str) -> Path:
    """A recipe path as given, else the shipped copy (:func:`xtask_safety.resources.recipe_path`)."""
    p = recipe_path(path, what)
    if not p.is_file():
        raise ConfigError(f"{what}: {path} is not a file")
    return p


def load_yaml(path: Path, what: str) -> dict[str, Any]:
    import yaml

    try:
        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{what}: {path} must be a YAML mapping")
    return obj


# ---------------------------------------------------------------------------------------- planning


@dataclass
class SweepPlan:
    """Everything needed to run (or print) the sweep, computed without running anything."""

    args: SweepArguments
    dir: SweepDir
    cells: list[Cell]
    build_args: Any  # DataBuildArguments
    data_key: str
    grid_key: str
    train_recipe: Path
    train_base: dict[str, Any]  # the training recipe with the sweep's overrides
    keys: dict[str, dict[str, str]] = field(default_factory=dict)  # cell id -> {train, generate, score, ...}
    extra: dict[str, ExtraGrid] = field(default_factory=dict)  # extra_eval name -> its records
    dev_key: str | None = None  # the development slice (dev_docs_per_domain), None when there is none

    @property
    def build_dir(self) -> Path:
        return self.dir.build(self.data_key)

    @property
    def grid_path(self) -> Path:
        return self.dir.grid(self.grid_key)

    @property
    def dev_path(self) -> Path | None:
        return self.dir.root / "data" / f"dev-{self.dev_key}.jsonl" if self.dev_key else None

    def grid_file(self, name: str = "") -> Path:
        """The main evaluation grid (``name`` empty) or an extra_eval set."""
        return self.dir.grid(self.extra[name].key) if name else self.grid_path

    def cell_recipe(self, cell: Cell, paths: bool = True) -> dict[str, Any]:
        """The training recipe of one cell (written to ``<adapter>/sweep_recipe.yaml``); without ``paths``,
        what its training key hashes (the set is identified by the data key and its name instead)."""
        recipe = {**self.train_base, **weighting_flags(cell.weighting), "model_name_or_path": cell.model,
                  "seed": cell.seed}
        if paths:
            recipe.update({"train_file": str(self.build_dir / cell.set_file), "output_dir": str(self.adapter_dir(cell)),
                           "resume": True, "run_group": self.args.name,
                           "run_tags": [f"sweep:{self.args.name}", f"seed:{cell.seed}"]})
            if self.dev_path:
                recipe["decision_dev_file"] = str(self.dev_path)
        return recipe

    def adapter_dir(self, cell: Cell) -> Path:
        return self.dir.adapter(cell.id, self.keys[cell.id]["train"])

    def generations(self, cell: Cell, name: str = "") -> Path:
        return self.dir.generations(cell.id + (f"@{name}" if name else ""), self.keys[cell.id][stage_name("generate", name)])

    def scores(self, cell: Cell, name: str = "") -> Path:
        return self.dir.scores(cell.id + (f"@{name}" if name else ""), self.keys[cell.id][stage_name("score", name)])

    def prompt_settings(self) -> dict[str, Any]:
        """Generation settings taken from the training recipe; dtype None picks bfloat16 on a GPU, float32 on a CPU."""
        return {"prompt_template": self.train_base.get("prompt_template", "chat"),
                "system_prompt": self.train_base.get("system_prompt"),
                "dtype": self.train_base.get("dtype")}

    def sampling(self) -> Any:
        from xtask_safety.generate.base import SamplingConfig

        return SamplingConfig(max_new_tokens=self.args.max_new_tokens)


@dataclass
class ExtraGrid:
    """An extra_eval set: its suite recipe, the records every cell answers and their content key."""

    suite: Path
    records: list[Any]
    key: str


def stage_name(stage: str, grid: str = "") -> str:
    """Key name of a stage on the main grid (``generate``) or on an extra_eval set (``generate@external``)."""
    return f"{stage}@{grid}" if grid else stage


def load_extra(args: SweepArguments) -> dict[str, ExtraGrid]:
    from xtask_safety.data.suites import load_suite

    out = {}
    for name, suite_path in args.extra_eval.items():
        path = resolve_file(suite_path, f"extra_eval.{name}")
        records = [r for r in load_suite(path).records if r.task in args.eval_task_list]  # the sweep's tasks only
        records = subsample_grid(records, args.extra_eval_docs_per_domain)
        key = stage_key({"stage": "extra-grid", "records": [r.to_dict() for r in records]})
        out[name] = ExtraGrid(path, records, key)
    return out


def make_plan(args: SweepArguments, cells: list[Cell]) -> SweepPlan:
    build_args = data_build_args(args)
    data_key = stage_key({"stage": "data", "build": _build_inputs(build_args)})
    grid_key = stage_key({"stage": "grid", "data": data_key, "phrasing": args.eval_phrasing,
                          "docs": args.eval_docs, "tasks": args.eval_task_list})
    recipe = resolve_file(args.train_recipe, "train_recipe")
    base = {**load_yaml(recipe, "train_recipe"), **args.train_overrides}
    dev_key = (stage_key({"stage": "dev", "data": data_key, "phrasing": args.eval_phrasing, "docs": args.eval_docs,
                          "dev": args.dev_docs_per_domain, "tasks": args.eval_task_list})
               if args.dev_docs_per_domain else None)
    plan = SweepPlan(args, SweepDir(args.output_dir), cells, build_args, data_key, grid_key, recipe, base,
                     extra=load_extra(args), dev_key=dev_key)
    grids = {"": grid_key, **{name: extra.key for name, extra in plan.extra.items()}}
    for cell in cells:
        keys: dict[str, str] = {}
        if not cell.is_base:
            rec = {k: v for k, v in plan.cell_recipe(cell, paths=False).items() if k not in UNKEYED}
            keys["train"] = stage_key({"stage": "train", "data": data_key, "set": cell.set_file, "recipe": rec,
                                       **({"dev": dev_key} if dev_key else {})})
        for name, key in grids.items():
            gen = keys[stage_name("generate", name)] = stage_key({
                "stage": "generate", "model": cell.model, "train": keys.get("train"), "grid": key,
                "sampling": asdict(plan.sampling()), "backend": args.backend, "max_model_len": args.max_model_len,
                **plan.prompt_settings()})
            keys[stage_name("score", name)] = stage_key({"stage": "score", "generate": gen, "judges": args.judges,
                                                         "primary": args.primary_judge, "utility": True})
        plan.keys[cell.id] = keys
    return plan


def data_build_args(args: SweepArguments) -> Any:
    from dataclasses import fields

    from xtask_safety.config import parse_recipe
    from xtask_safety.data.pipeline import DataBuildArguments

    if args.data_recipe:
        path = resolve_file(args.data_recipe, "data_recipe")
        (build,) = parse_recipe((DataBuildArguments,), ["--config", str(path)], prog="sweep data_recipe")
    else:
        build = DataBuildArguments()
    known = {f.name for f in fields(DataBuildArguments)}
    unknown = sorted(set(args.data_overrides) - known)
    if unknown:
        raise ConfigError(f"data_overrides: unknown data recipe key(s) {unknown}")
    for k, v in args.data_overrides.items():
        setattr(build, k, v)
    build.tasks = ",".join(args.eval_task_list)
    build.sizes = list(args.sizes) if any(c != "mixed" for c in args.defended) else []
    build.mixed_sizes = list(args.mixed_sizes) if "mixed" in args.defended else []
    build.export_paper = False
    build.output_dir = "<sweep>"  # set when the build runs
    build.validate()
    if not build.eval_per_domain and not any(s.role == "eval" for s in _sources(build)):
        raise ConfigError("data_recipe: no evaluation documents (set eval_per_domain or add a source with role: eval)")
    return build


def _sources(build: Any) -> list[Any]:
    from xtask_safety.data.sources import parse_sources

    return parse_sources(build.sources)


def _build_inputs(build: Any) -> dict[str, Any]:
    """The data build's settings plus content hashes of its local inputs (files, the demo corpus)."""
    from xtask_safety.data.corpus import demo_dir
    from xtask_safety.data.sources import file_sha256

    hashes = []
    for spec in _sources(build):
        if spec.demo:
            hashes.append(file_sha256(demo_dir()))
        elif spec.path:
            p = Path(spec.path)
            hashes.append(file_sha256(p, spec.pattern) if p.exists() else f"missing:{spec.path}")
        else:
            hashes.append(f"hf:{spec.hf}")
    pool = Path(build.refusal_pool) if build.refusal_pool else None
    settings = {k: v for k, v in asdict(build).items() if k not in ("output_dir", "overwrite")}
    return {"settings": settings, "sources_sha256": hashes,
            "refusal_pool_sha256": file_sha256(pool) if pool and pool.is_file() else None}


# ------------------------------------------------------------------------------------------ stages


@dataclass
class Context:
    plan: SweepPlan
    events: EventLog
    progress: bool = True
    grids: dict[str, list[Any]] = field(default_factory=dict)  # "" (the main grid) and the extra_eval sets

    @property
    def args(self) -> SweepArguments:
        return self.plan.args


def prepare_data(ctx: Context) -> list[Any]:
    """Build the defense sets and the evaluation grid once (under a lock); return the grid records."""
    from xtask_safety.records import read_records, write_jsonl

    plan = ctx.plan
    with file_lock(plan.dir.root / "data" / ".lock"):
        if (plan.build_dir / "manifest.json").is_file():
            ctx.events.add("*", "data", "reused", key=plan.data_key)
        else:
            _run_build(ctx)
        if plan.grid_path.is_file():
            ctx.events.add("*", "grid", "reused", key=plan.grid_key)
        else:
            grid = subsample_grid(read_records(_grid_source(plan.build_dir, ctx.args.eval_phrasing)),
                                  ctx.args.eval_docs)
            write_jsonl(plan.grid_path, grid)
            ctx.events.add("*", "grid", "run", key=plan.grid_key, records=len(grid))
        if plan.dev_path and not plan.dev_path.is_file():
            dev = dev_slice(read_records(_grid_source(plan.build_dir, ctx.args.eval_phrasing)), ctx.args.eval_docs,
                            ctx.args.dev_docs_per_domain)
            write_jsonl(plan.dev_path, [r for r in dev if r.task in ctx.args.eval_task_list])
            ctx.events.add("*", "dev", "run", key=plan.dev_key, records=len(dev))
    for name, extra in plan.extra.items():
        path = plan.grid_file(name)
        if not path.is_file():
            write_jsonl(path, extra.records)
            ctx.events.add("*", f"grid@{name}", "run", key=extra.key, records=len(extra.records))
        ctx.grids[name] = extra.records
    ctx.grids[""] = read_records(plan.grid_path)
    return ctx.grids[""]


def _grid_source(build_dir: Path, phrasing: str) -> Path:
    """The build's grid of held-out documents, else its imported evaluation records (paper eval files)."""
    grid = build_dir / "eval" / f"grid-{phrasing}.jsonl"
    if grid.is_file():
        return grid
    imported = build_dir / "eval" / "imported.jsonl"
    if imported.is_file():
        log(f"data: no held-out document grid; evaluating the imported evaluation records ({imported})")
        return imported
    raise ConfigError(f"{build_dir}: the data build has no evaluation grid (set eval_per_domain in the data recipe)")


def _run_build(ctx: Context) -> None:
    from dataclasses import replace

    from xtask_safety.data.pipeline import run_build

    plan = ctx.plan
    build = replace(plan.build_args, output_dir=str(plan.build_dir), overwrite=True)
    generator = judge = None
    if build.refusals == "model":
        from xtask_safety.data.cli import _model_refusal_fns

        generator, judge = _model_refusal_fns(build)
    t0 = time.time()
    result = run_build(build, generator=generator, judge=judge, log=log)
    ctx.events.add("*", "data", "run", key=plan.data_key, sets=len(result.manifest["sets"]),
                   seconds=round(time.time() - t0, 1))
    log(f"data: {len(result.manifest['sets'])} defense sets and the evaluation grids in {plan.build_dir}")


def _documents_by_domain(grid: list[Any]) -> dict[str, list[str]]:
    """Document ids per domain in grid order."""
    order: dict[str, list[str]] = {}
    for r in grid:
        doc = r.meta.get("doc_id", r.id)
        ids = order.setdefault(r.domain, [])
        if doc not in ids:
            ids.append(doc)
    return order


def dev_slice(grid: list[Any], eval_docs: dict[str, int] | int, n: int) -> list[Any]:
    """The ``n`` documents of each domain that follow the evaluated ones (all their tasks): never evaluated."""
    keep = set()
    for dom, ids in _documents_by_domain(grid).items():
        start = eval_docs.get(dom, len(ids)) if isinstance(eval_docs, dict) else eval_docs
        if start + n > len(ids):
            raise ConfigError(f"dev_docs_per_domain: {n} {dom!r} documents after the {start} evaluated ones asked for, "
                              f"the held-out grid has {len(ids)} (raise eval_per_domain in the data recipe)")
        keep.update(ids[start:start + n])
    return [r for r in grid if r.meta.get("doc_id", r.id) in keep]


def subsample_grid(grid: list[Any], docs: dict[str, int] | int | None) -> list[Any]:
    """The first N documents of each domain (all their tasks, so comparisons stay paired)."""
    if docs is None:
        return grid
    order = _documents_by_domain(grid)
    if isinstance(docs, dict):
        unknown = sorted(set(docs) - set(order))
        if unknown:
            raise ConfigError(f"eval_docs_per_domain: no evaluation documents of domain(s) {unknown}; "
                              f"the grid has {sorted(order)}")
    keep = set()
    for dom, ids in order.items():
        n = docs.get(dom, len(ids)) if isinstance(docs, dict) else docs
        if n > len(ids):
            raise ConfigError(f"eval_docs_per_domain: {n} {dom!r} documents asked for, the grid has {len(ids)} "
                              "(raise eval_per_domain in the data recipe)")
        keep.update(ids[:n])
    return [r for r in grid if r.meta.get("doc_id", r.id) in keep]


def train_cell(ctx: Context, cell: Cell) -> dict[str, Any]:
    """Train (or reuse, or resume) the cell's adapter; returns the training summary."""
    import json

    from xtask_safety.records import atomic_write_text, write_json
    from xtask_safety.train.checkpoints import last_complete_checkpoint

    plan = ctx.plan
    out = plan.adapter_dir(cell)
    key = plan.keys[cell.id]["train"]
    done = out / TRAIN_DONE
    if done.is_file() and (out / "adapter_model.safetensors").is_file():
        info = json.loads(done.read_text(encoding="utf-8"))
        if info.get("key") == key:
            ctx.events.add(cell.id, "train", "reused", key=key)
            return info["summary"]
    recipe = out / CELL_RECIPE
    atomic_write_text(recipe, dump_yaml(plan.cell_recipe(cell)))
    resume = last_complete_checkpoint(out)
    action = "resumed" if resume else "run"
    log(f"{cell.id}: training ({'from ' + Path(resume).name if resume else 'from scratch'}) -> {out}")
    t0 = time.time()
    if ctx.args.launcher == "accelerate":
        summary = _train_launched(ctx, recipe, out)
    else:
        from xtask_safety.train.run import parse_train_args, train

        summary = train(*parse_train_args(["--config", str(recipe)]), progress=ctx.progress)
        if ctx.args.backend == "vllm":
            from xtask_safety.generate.backends import free_accelerator_memory

            free_accelerator_memory()  # vLLM's start-up check counts memory the trainer's allocator still holds
    summary = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool, type(None), dict, list))}
    write_json(done, {"key": key, "summary": summary, "seconds": round(time.time() - t0, 1)})
    ctx.events.add(cell.id, "train", action, key=key, resumed_from=resume, steps=summary.get("global_step"),
                   seconds=round(time.time() - t0, 1))
    return summary


def launch_command(ctx_args: SweepArguments, recipe: Path) -> list[str]:
    """``accelerate launch [--config_file X] [args] -m xtask_safety.train --config RECIPE``."""
    import shlex

    from xtask_safety.train.launch import build_launch_command

    if ctx_args.accelerate_config:
        return build_launch_command(ctx_args.accelerate_config, ctx_args.accelerate_args, ["--config", str(recipe)])
    try:
        extra = shlex.split(ctx_args.accelerate_args or "")
    except ValueError as exc:
        raise ConfigError(f"accelerate_args: {exc}") from None
    return [sys.executable, "-m", "accelerate.commands.launch", *extra, "-m", "xtask_safety.train",
            "--config", str(recipe)]


def _train_launched(ctx: Context, recipe: Path, out: Path) -> dict[str, Any]:
    import json

    from xtask_safety.train.launch import LAUNCHED_ENV

    cmd = launch_command(ctx.args, recipe)
    env = {**os.environ, LAUNCHED_ENV: "1"}
    proc = subprocess.run(cmd, env=env, check=False)
    if proc.returncode != 0:
        raise XtaskError(f"training {out.name}: `accelerate launch` exited with code {proc.returncode} "
                         "(its output is above); rerun the sweep to resume from the last checkpoint")
    return json.loads((out / "xtask_training.json").read_text(encoding="utf-8"))["summary"]


def generate_cell(ctx: Context, cell: Cell, adapter: Path | None, grid_name: str = "") -> list[dict[str, Any]]:
    """The cell's answers on the main grid or on an extra_eval set (resumes record by record)."""
    from xtask_safety.generate.run import Run, generate_runs
    from xtask_safety.records import JsonlAppender

    plan = ctx.plan
    grid = ctx.grids.get(grid_name) or []
    path = plan.generations(cell, grid_name)
    stage = stage_name("generate", grid_name)
    key = plan.keys[cell.id][stage]
    with JsonlAppender(path) as existing:
        pending = sum(1 for r in grid if r.id not in existing.done)
        if not pending:
            ctx.events.add(cell.id, stage, "reused", key=key)
            return [existing.done[r.id] for r in grid]
    action = "resumed" if pending < len(grid) else "run"
    prompt = plan.prompt_settings()
    info = {"model": cell.model, "adapter": adapter.name if adapter else None, "backend": ctx.args.backend,
            "prompt_template": prompt["prompt_template"], "system_prompt": prompt["system_prompt"]}
    t0 = time.time()
    if ctx.args.backend == "vllm":
        rows = _generate_vllm(ctx, cell, adapter, path, grid_name)
    else:
        backend = _backend(ctx, cell, adapter)
        rows = generate_runs(grid, backend, [Run(path, None, info)], plan.sampling(),
                             desc=cell.id + (f" @{grid_name}" if grid_name else ""), progress=ctx.progress,
                             on_too_long="skip")[0]
        del backend
    ctx.events.add(cell.id, stage, action, key=key, records=pending, seconds=round(time.time() - t0, 1))
    return rows


def _backend(ctx: Context, cell: Cell, adapter: Path | None) -> Any:
    import torch

    from xtask_safety.generate.backends import BackendSpec, build_backend

    prompt = ctx.plan.prompt_settings()
    torch.manual_seed(cell.seed)
    return build_backend("transformers", BackendSpec(
        model=cell.model, adapter=str(adapter) if adapter else None, prompt_template=prompt["prompt_template"],
        system_prompt=prompt["system_prompt"], batch_size=ctx.args.batch_size, max_model_len=ctx.args.max_model_len,
        dtype=prompt["dtype"]))


def vllm_generate_argv(ctx: Context, cell: Cell, adapter: Path | None, path: Path, grid_name: str = "") -> list[str]:
    """The ``generate`` command a cell runs in vLLM's interpreter (same grid, sampling and prompt settings)."""
    args, prompt = ctx.args, ctx.plan.prompt_settings()
    argv = ["--input", str(ctx.plan.grid_file(grid_name)), "--output", str(path), "--model_name_or_path", cell.model,
            "--backend", "vllm", "--max_new_tokens", str(ctx.plan.sampling().max_new_tokens),
            "--prompt_template", prompt["prompt_template"], "--on_too_long", "skip",
            "--tensor_parallel_size", str(args.tensor_parallel_size), "--enforce_eager", str(args.enforce_eager).lower(),
            "--seed", str(cell.seed), "--quiet", str(not ctx.progress).lower()]
    optional = {"--adapter": str(adapter) if adapter else None, "--system_prompt": prompt["system_prompt"],
                "--dtype": prompt["dtype"], "--max_model_len": args.max_model_len,
                "--gpu_memory_utilization": args.gpu_memory_utilization}
    for flag, value in optional.items():
        if value is not None:
            argv += [flag, str(value)]
    return argv


def _generate_vllm(ctx: Context, cell: Cell, adapter: Path | None, path: Path, grid_name: str = "") -> list[dict[str, Any]]:
    """Generate in vLLM's interpreter (a child process): the sweep's process never imports vLLM."""
    from xtask_safety.generate.backends import (
        free_accelerator_memory,
        run_generate,
        vllm_python_for_subprocess,
    )
    from xtask_safety.records import JsonlAppender

    python = vllm_python_for_subprocess(ctx.args.vllm_python)
    free_accelerator_memory()
    code = run_generate(python, vllm_generate_argv(ctx, cell, adapter, path, grid_name))
    if code != 0:
        raise XtaskError(f"{cell.id}: generation in the vLLM environment ({python}) exited with code {code} (its "
                         "output is above); rerun the sweep to resume")
    with JsonlAppender(path) as done:
        grid = ctx.grids.get(grid_name) or []
        missing = [r.id for r in grid if r.id not in done.done]
        if missing:
            raise DataError(f"{cell.id}: vLLM generation left {len(missing)} record(s) unanswered ({missing[0]}, ...)")
        return [done.done[r.id] for r in grid]


def score_cell(ctx: Context, cell: Cell, rows: list[dict[str, Any]] | None, grid_name: str = "") -> dict[str, Any]:
    import json

    from xtask_safety.records import write_json, write_jsonl
    from xtask_safety.score.run import add_utility, judge_rows, summarize

    out = ctx.plan.scores(cell, grid_name)
    stage = stage_name("score", grid_name)
    key = ctx.plan.keys[cell.id][stage]
    if (out / "summary.json").is_file():
        ctx.events.add(cell.id, stage, "reused", key=key)
        return json.loads((out / "summary.json").read_text(encoding="utf-8"))
    if rows is None:
        raise DataError(f"{cell.id}: no generations to score")
    scored = add_utility(judge_rows(rows, ctx.args.judges))
    summary = summarize(scored, primary=ctx.args.primary_judge)
    write_jsonl(out / "scored.jsonl", scored)
    write_json(out / "summary.json", summary)  # written last: its presence marks the stage done
    ctx.events.add(cell.id, stage, "run", key=key, records=len(scored))
    return summary


def dump_yaml(obj: dict[str, Any]) -> str:
    import yaml

    head = "# Written by `xtask-safety sweep` for one cell: the sweep's training recipe, its overrides and the cell.\n"
    return head + yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)
