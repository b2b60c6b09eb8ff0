"""Resumable, shardable generation over record files: one JSON line per record, keyed by id.

Both backends (Transformers, vLLM) go through :func:`generate_runs`:

* the batch plan is made over *all* records of the run, then batches already written are skipped,
  so a resumed run sees exactly the batches (and sampling seeds) an uninterrupted run sees: greedy
  output is byte-identical, sampled output is the same sample;
* rows are appended and fsynced as each batch finishes; a kill loses at most the batch in flight;
* prompts longer than the model can take (prompt tokens + ``max_new_tokens`` > ``max_model_len``, or
  prompt tokens > ``max_prompt_tokens``) stop the job before any generation (``on_too_long="error"``),
  are written as rows with ``response: null`` and ``finish: "prompt_too_long"`` (``"skip"``), or have
  their *document* cut to fit (``"truncate"``: the instruction and the chat template are kept, the cut
  is recorded in ``meta.truncation``; see :func:`xtask_safety.data.truncate.truncate_prompts`): never
  dropped silently;
* an output file written with other settings (sampling, model, adapter) is refused, so one file
  never mixes two configurations;
* :func:`merge_outputs` joins the files of ``--shard i/n`` jobs and checks that every input id is
  there exactly once.
"""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from xtask_safety import faults
from xtask_safety.errors import ConfigError, DataError
from xtask_safety.generate.base import Backend, SamplingConfig
from xtask_safety.records import JsonlAppender, Record, read_jsonl, read_records, write_jsonl

logger = logging.getLogger(__name__)
ON_TOO_LONG = ("error", "skip", "truncate")
PER_ROW_KEYS = frozenset({"n_tokens", "finish", "prompt_tokens"})  # generation meta that is not a setting


def shard_records(records: list[Record], shard: str | None) -> list[Record]:
    """Keep shard ``i/n`` (0-based) of the records, by position in the input file."""
    if not shard:
        return records
    i, n = parse_shard(shard)
    return [r for k, r in enumerate(records) if k % n == i]


def parse_shard(shard: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in shard.split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        raise DataError(f"--shard: expected i/n with 0 <= i < n, got {shard!r}") from None
    return i, n


@dataclass
class Run:
    """One output file: every record answered by one model (and LoRA adapter)."""

    path: Path
    adapter: str | None = None  # adapter name known to the backend (vLLM); None: the model as loaded
    run_info: dict[str, Any] = field(default_factory=dict)


def generate_to_file(
    records: list[Record],
    backend: Backend,
    out_path: str | Path,
    sampling: SamplingConfig | None = None,
    run_info: dict[str, Any] | None = None,
    desc: str = "generate",
    progress: bool = True,
    adapter: str | None = None,
    on_too_long: str = "error",
    max_prompt_tokens: int | None = None,
) -> list[dict[str, Any]]:
    """Generate an answer for every record not yet in ``out_path``; return all rows in input order."""
    run = Run(Path(out_path), adapter, dict(run_info or {}))
    return generate_runs(records, backend, [run], sampling, desc=desc, progress=progress, on_too_long=on_too_long,
                         max_prompt_tokens=max_prompt_tokens)[0]


def generate_runs(
    records: list[Record],
    backend: Backend,
    runs: list[Run],
    sampling: SamplingConfig | None = None,
    desc: str = "generate",
    progress: bool = True,
    on_too_long: str = "error",
    max_prompt_tokens: int | None = None,
) -> list[list[dict[str, Any]]]:
    """Answer ``records`` once per run (e.g. per LoRA adapter) with one backend; rows per run, input order.

    A backend with ``supports_adapters`` (vLLM) receives the runs' prompts mixed in the same batches,
    each with its adapter; any other backend accepts only runs without an adapter name.
    """
    sampling = sampling or SamplingConfig()
    ids = _check_request(records, backend, runs, on_too_long, max_prompt_tokens)
    job = _prepare(records, ids, backend, runs, sampling, on_too_long, max_prompt_tokens)
    with ExitStack() as stack:
        outs = [stack.enter_context(JsonlAppender(run.path)) for run in runs]
        for run, out, expected in zip(runs, outs, job.settings, strict=True):
            _check_settings(run.path, out.done, set(ids), expected)
        _write_too_long(job, outs)
        missing = _generate_pending(job, outs, desc, progress)
        if missing:
            raise DataError(f"generate: no output came back for {len(missing)} request(s) "
                            f"({', '.join(missing[:5])}); the others were written, rerun to retry them")
        return [[out.done[i] for i in ids if i in out.done] for out in outs]


@dataclass
class _Job:
    """One :func:`generate_runs` call once its inputs are checked and its prompts rendered."""

    backend: Backend
    adapters_ok: bool  # the backend takes the runs' adapters mixed in one batch (vLLM)
    runs: list[Run]
    sampling: SamplingConfig
    max_prompt_tokens: int | None
    records: list[Record]  # documents cut to fit under on_too_long="truncate"
    ids: list[str]
    texts: list[str]  # rendered prompts, one per record
    too_long: dict[int, int]  # record index -> prompt tokens, for prompts over the budget
    cut: int  # records whose document was cut
    settings: list[dict[str, Any]]  # per run: what its output file must have been written with


def _check_request(records: list[Record], backend: Backend, runs: list[Run], on_too_long: str,
                   max_prompt_tokens: int | None) -> list[str]:
    """Refuse bad options, duplicate ids, shared output files and adapters the backend cannot switch; the ids."""
    if on_too_long not in ON_TOO_LONG:
        raise ConfigError(f"on_too_long: expected one of {ON_TOO_LONG}, got {on_too_long!r}")
    if max_prompt_tokens is not None and max_prompt_tokens < 1:
        raise ConfigError(f"max_prompt_tokens: must be a positive number of tokens, got {max_prompt_tokens}")
    if not runs:
        raise ConfigError("generate: no output runs")
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise DataError(f"generation input: duplicate id {dup!r}")
    paths = [run.path.resolve() for run in runs]
    if len(set(paths)) != len(paths):
        raise ConfigError("generate: two runs write to the same output file")
    if not backend.supports_adapters and any(run.adapter for run in runs):
        raise ConfigError(f"backend {backend.name!r}: cannot switch adapters within a run")
    return ids


def _prepare(records: list[Record], ids: list[str], backend: Backend, runs: list[Run], sampling: SamplingConfig,
             on_too_long: str, max_prompt_tokens: int | None) -> _Job:
    """Cut documents (``truncate``), render the prompts, find those too long (an error under ``error``)."""
    cut = 0
    if on_too_long == "truncate":
        records, cut = _truncate(records, backend, sampling, max_prompt_tokens)
    texts = [backend.render(r.prompt()) for r in records]
    too_long = find_too_long(records, texts, backend, sampling, max_prompt_tokens)
    if too_long and on_too_long == "error":
        raise DataError(too_long_message(too_long, len(records), backend, sampling, ids, max_prompt_tokens))

    settings = [{**run.run_info, "sampling": asdict(sampling)} for run in runs]
    if on_too_long == "truncate":  # the prompts depend on the budget: a file holds one budget only
        settings = [{**s, "truncate_to": prompt_budget(backend, sampling, max_prompt_tokens)} for s in settings]
    return _Job(backend, backend.supports_adapters, runs, sampling, max_prompt_tokens, records, ids, texts, too_long,
                cut, settings)


def _write_too_long(job: _Job, outs: list[JsonlAppender]) -> None:
    """Write the over-long prompts as ``response: null`` rows (those not written yet), and say what was cut."""
    records, too_long = job.records, job.too_long
    for j, out in enumerate(outs):
        for i, n_prompt in too_long.items():
            if records[i].id not in out.done:
                out.append(_row(records[i], None, {"n_tokens": 0, "finish": "prompt_too_long",
                                                   "prompt_tokens": n_prompt}, job.settings[j]))
    if job.cut:
        logger.warning(f"generate: {job.cut} of {len(records)} prompt(s) had their document cut to fit "
                       f"{prompt_budget(job.backend, job.sampling, job.max_prompt_tokens)} tokens (meta.truncation)")
    if too_long:
        logger.warning(f"generate: {len(too_long)} prompt(s) too long, written with response null: "
                       + ", ".join(f"{records[i].id} ({n} tokens)" for i, n in list(too_long.items())[:5]))


def _generate_pending(job: _Job, outs: list[JsonlAppender], desc: str, progress: bool) -> list[str]:
    """Answer every (run, record) pair not yet written, batch by batch; return the requests the backend lost.

    The batch plan covers *all* pairs, written or not, and batches already written are skipped whole, so
    a resumed run sees the same batches (and seeds) as an uninterrupted one.
    """
    ids = job.ids
    jobs = [(j, i) for j in range(len(job.runs)) for i in range(len(job.records)) if i not in job.too_long]
    job_texts = [job.texts[i] for _, i in jobs]
    pending = sum(1 for j, i in jobs if ids[i] not in outs[j].done)
    missing: list[str] = []
    if pending:
        batches = job.backend.plan(job_texts)
        bar = tqdm(total=pending, desc=desc, unit="prompt", disable=not progress, dynamic_ncols=True)
        for b, batch in enumerate(batches):
            todo = [k for k in batch if ids[jobs[k][1]] not in outs[jobs[k][0]].done]
            if not todo:
                continue  # written before an interruption: the plan is the same, so skip it whole
            results = _answer_batch(job, jobs, job_texts, b, batch)
            todo_set = set(todo)
            for k, res in zip(batch, results, strict=True):
                if k not in todo_set:
                    continue
                j, i = jobs[k]
                if res is None:  # the backend lost this request: report it, never drop it silently
                    missing.append(f"{job.runs[j].path.name}:{ids[i]}")
                    continue
                gen = {"n_tokens": res["n_tokens"], "finish": res["finish"]}
                outs[j].append(_row(job.records[i], res["text"], gen, job.settings[j]))
                faults.point("generate.row")
            faults.point("generate.batch")
            bar.update(len(todo))
        bar.close()
    return missing


def _answer_batch(job: _Job, jobs: list[tuple[int, int]], job_texts: list[str], b: int,
                  batch: list[int]) -> list[dict[str, Any] | None]:
    """The backend's answers to planned batch ``b`` (all its prompts, even those already written)."""
    adapters_ok, sampling, ids = job.adapters_ok, job.sampling, job.ids
    # Seeds depend on the batch's place in the full plan, so a resumed run samples like a fresh one.
    # Adapter-aware backends (vLLM) seed each request from its record id instead: the same record
    # then draws the same random numbers under every adapter (a paired comparison).
    batch_sampling = sampling if adapters_ok else replace(sampling, seed=sampling.seed + b)
    extra: dict[str, Any] = {}
    if adapters_ok:
        extra = {"adapters": [job.runs[jobs[k][0]].adapter for k in batch],
                 "keys": [ids[jobs[k][1]] for k in batch]}
    results = job.backend.generate_batch([job_texts[k] for k in batch], batch_sampling, rows=batch, **extra)
    if len(results) != len(batch):
        raise DataError(f"backend returned {len(results)} outputs for a batch of {len(batch)}")
    return results


def _row(rec: Record, text: str | None, gen: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    row = rec.to_dict()
    row["response"] = text
    row["meta"] = {**rec.meta, "generation": {**gen, **settings}}
    return row


def _norm(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def settings_of(row: dict[str, Any]) -> dict[str, Any] | None:
    gen = (row.get("meta") or {}).get("generation")
    if not isinstance(gen, dict):
        return None
    return {k: v for k, v in gen.items() if k not in PER_ROW_KEYS}


def _check_settings(path: Path, done: dict[str, dict], ids: set[str], expected: dict[str, Any]) -> None:
    """Refuse to resume into a file that holds answers produced with other settings."""
    for rid, row in done.items():
        if rid not in ids:
            continue
        old = settings_of(row)
        if old is None:
            raise DataError(f"{path}: row {rid!r} has no generation metadata; not an output of `generate` "
                            "(write to a new --output)")
        # Files from before settings were recorded (no 'sampling') are compared on the keys they have.
        keys = set(old) | set(expected) if "sampling" in old else set(old) & set(expected)
        for key in sorted(keys):
            if _norm(old.get(key)) != _norm(expected.get(key)):
                raise DataError(f"{path}: holds answers generated with other settings ({key}: {old.get(key)!r}, "
                                f"now {expected.get(key)!r}); write to a new --output or delete the file")
        return  # rows of one file were written by one configuration; the first is enough


# ------------------------------------------------------------------------------------ prompt length


def prompt_budget(backend: Backend, sampling: SamplingConfig, max_prompt_tokens: int | None = None) -> int | None:
    """The most prompt tokens a record may have: room for ``max_new_tokens`` in ``max_model_len``, and at
    most ``max_prompt_tokens``; None when neither limit is known."""
    limit = backend.max_model_len
    budgets = [b for b in (limit - sampling.max_new_tokens if limit else None, max_prompt_tokens) if b is not None]
    return min(budgets) if budgets else None


def find_too_long(records: list[Record], texts: list[str], backend: Backend, sampling: SamplingConfig,
                  max_prompt_tokens: int | None = None) -> dict[int, int]:
    """``{record index: prompt tokens}`` for prompts over :func:`prompt_budget`."""
    budget = prompt_budget(backend, sampling, max_prompt_tokens)
    if budget is None or not hasattr(backend, "prompt_lengths"):
        return {}
    lengths = backend.prompt_lengths(texts)
    return {i: n for i, n in enumerate(lengths) if n > budget}


def _truncate(records: list[Record], backend: Backend, sampling: SamplingConfig,
              max_prompt_tokens: int | None) -> tuple[list[Record], int]:
    """Records whose documents are cut to fit the prompt budget (the rest unchanged), and how many were cut.

    Rows that cannot fit even with a one-word document are kept whole: they are then written as
    ``prompt_too_long`` rows, as with ``on_too_long="skip"``."""
    from xtask_safety.data.truncate import truncate_prompts

    budget = prompt_budget(backend, sampling, max_prompt_tokens)
    if budget is None or not hasattr(backend, "prompt_lengths"):
        raise ConfigError("on_too_long truncate: the backend reports no max_model_len; pass --max_prompt_tokens")
    if budget < 1:
        raise ConfigError(f"on_too_long truncate: max_new_tokens {sampling.max_new_tokens} leaves no room for a "
                          f"prompt in max_model_len {backend.max_model_len}")
    kept, report = truncate_prompts(records, backend.render, backend.prompt_lengths, budget)
    by_id = {r.id: r for r in kept}
    out = [replace(by_id[r.id], response=r.response) if r.id in by_id else r for r in records]
    return out, report.shortened


def too_long_message(too_long: dict[int, int], total: int, backend: Backend, sampling: SamplingConfig,
                     ids: list[str] | None = None, max_prompt_tokens: int | None = None) -> str:
    worst = sorted(too_long.items(), key=lambda kv: -kv[1])[:5]
    names = ", ".join(f"#{i}" if ids is None else ids[i] for i, _ in worst)
    limit = (f"max_model_len {backend.max_model_len} with max_new_tokens {sampling.max_new_tokens}"
             if backend.max_model_len else "")
    if max_prompt_tokens is not None:
        limit = f"{limit + ' and ' if limit else ''}max_prompt_tokens {max_prompt_tokens}"
    return (f"{len(too_long)} of {total} prompts do not fit {limit} (longest: {max(too_long.values())} prompt "
            f"tokens; records {names}); shorten the documents, raise --max_model_len, or pass --on_too_long "
            "truncate to cut their documents, or skip to write them with response null")


# ------------------------------------------------------------------------------------------ merge


def merge_outputs(
    shard_paths: list[str | Path], out_path: str | Path, input_path: str | Path | None = None
) -> dict[str, Any]:
    """Join shard outputs into one file (atomic write); returns a small report.

    Every id must come from one shard only (an identical copy in two shards is tolerated and
    counted); the shards must share their sampling settings and backend. With ``input_path`` (the
    records that were sharded) the merged file holds exactly those ids, in input order.
    """
    if not shard_paths:
        raise ConfigError("merge: no shard files given")
    rows: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    order: list[str] = []
    duplicates = 0
    ref_settings: tuple[str, dict[str, Any]] | None = None
    notes: list[str] = []
    for path in map(Path, shard_paths):
        n_lines = 0
        for lineno, row in read_jsonl(path):
            n_lines += 1
            where = f"{path}:{lineno}"
            if not isinstance(row, dict) or not isinstance(row.get("id"), str):
                raise DataError(f"{where}: expected an object with a string 'id'")
            settings = settings_of(row)
            if settings is None:
                raise DataError(f"{where}: no generation metadata (not an output of `generate`)")
            if ref_settings is None:
                ref_settings = (where, settings)
            else:
                for key in sorted(set(settings) | set(ref_settings[1])):
                    a, b = settings.get(key), ref_settings[1].get(key)
                    if _norm(a) == _norm(b):
                        continue
                    if key in ("sampling", "backend"):
                        raise DataError(f"{where}: {key} differs from {ref_settings[0]} ({a!r} vs {b!r}); "
                                        "shards of one run must share their settings")
                    note = f"{key} differs between shards ({b!r} in {ref_settings[0]}, {a!r} in {where})"
                    if note.split(" (")[0] not in {n.split(" (")[0] for n in notes}:
                        notes.append(note)
            rid = row["id"]
            if rid in rows:
                if _norm(rows[rid]) != _norm(row):
                    raise DataError(f"{where}: id {rid!r} is also in {origin[rid]} with a different answer")
                duplicates += 1
                continue
            rows[rid], origin[rid] = row, where
            order.append(rid)
        if n_lines == 0:
            notes.append(f"{path}: empty shard")
    if input_path is not None:
        want = [r.id for r in read_records(input_path)]
        missing = [i for i in want if i not in rows]
        extra = sorted(set(rows) - set(want))
        if missing:
            raise DataError(f"merge: {len(missing)} of {len(want)} input ids are in no shard (first: "
                            f"{', '.join(missing[:5])}); finish or rerun the shard that holds them")
        if extra:
            raise DataError(f"merge: {len(extra)} ids are not in {input_path} (first: {', '.join(extra[:5])})")
        order = want
    n = write_jsonl(out_path, [rows[i] for i in order])
    not_generated = sum(1 for i in order if rows[i].get("response") is None)
    return {"output": str(out_path), "records": n, "shards": len(shard_paths), "identical_duplicates": duplicates,
            "not_generated": not_generated, "notes": notes}
