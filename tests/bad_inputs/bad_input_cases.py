"""The bad-input corpus: malformed inputs across the CLI, as data.

Every case runs in a fresh directory ``{tmp}`` that already holds valid files (``good.jsonl``: two
records; ``gen.jsonl``: two generated answers; ``corpus.jsonl``: a small three-domain corpus;
``train.jsonl``: training records) plus the case's own ``files``. Placeholders in ``argv``,
``files`` and ``expect``: ``{tmp}``, ``{model}`` (a tiny local model), ``{other_adapter}`` (a LoRA
adapter made for a differently shaped model), ``{tiny_adapter}`` (one made for ``{model}``).

Each case must end with exit code 2 and one line on stderr, ``xtask-safety: error: ...``, that
contains every ``expect`` string (the file, row or key, and what is wrong), with no traceback, and
must leave the directory as it was (no new or changed file or directory).

``mode``: ``None`` runs in-process (``cli.main``), ``"console"`` also through ``python -m
xtask_safety``, ``"enospc"`` in-process with every write under ``{tmp}/out*`` failing with ENOSPC
(a full disk, simulated by monkeypatching the write calls), ``"fsize"`` through the console entry
with RLIMIT_FSIZE so that the kernel refuses writes past a few KiB (a real write failure, EFBIG);
``"fsize-fork"`` the same in a fork of the test process (training: no second import of torch).
``may_leave``: paths a failed run may leave (the resumable state of a training run).
``needs_write_protect``: an unwritable directory via file permissions (skipped when run as root).
"""

from __future__ import annotations

import json

GOOD = {"id": "a", "task": "summarize", "domain": "news", "document": "The county side won the final.",
        "instruction": "Summarize the above article briefly in 3 sentences."}


def _jl(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _gen(rid: str, **kw) -> dict:
    return {**GOOD, "id": rid, "response": "The side won.",
            "meta": {"generation": {"n_tokens": 3, "finish": "stop", "model": "m", "sampling": {}}}, **kw}


TRAIN = ["train", "--model_name_or_path", "{model}", "--train_file", "{tmp}/train.jsonl", "--output_dir",
         "{tmp}/out", "--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--max_steps", "1",
         "--save_strategy", "no", "--use_peft", "true", "--lora_r", "2"]
GEN = ["generate", "--model_name_or_path", "{model}", "--output", "{tmp}/out.jsonl", "--max_new_tokens", "2",
       "--quiet", "true"]
SCORE = ["score", "--output_dir", "{tmp}/out"]
BUILD = ["data", "set", "--heldout_per_domain", "0", "--malicious_per_task", "2", "--benign_per_task", "2",
         "--output", "{tmp}/out.jsonl"]


def _recipe_build(extra: str = "") -> str:
    return ("output_dir: {tmp}/out\nsources:\n  - {path: {tmp}/corpus.jsonl}\nsizes: [2]\nmixed_sizes: [2]\n"
            "tasks: summarize,case\n" + extra)


CASES: list[dict] = [
    # ---------------------------------------------------------------- broken JSON / JSONL / YAML / CSV
    dict(name="jsonl-malformed-line", argv=[*GEN, "--input", "{tmp}/in.jsonl"],
         files={"in.jsonl": _jl(GOOD) + '{"id": "b", "task": \n'}, expect=["{tmp}/in.jsonl:2: malformed JSON"],
         mode="console"),
    dict(name="jsonl-truncated-object", argv=[*SCORE, "--input", "{tmp}/in.jsonl"],
         files={"in.jsonl": '{"id": "a", "task": "summarize", "dom'}, expect=["{tmp}/in.jsonl:1: malformed JSON"]),
    dict(name="jsonl-array-not-object", argv=[*GEN, "--input", "{tmp}/in.jsonl"],
         files={"in.jsonl": "[1, 2, 3]\n"}, expect=["{tmp}/in.jsonl:1", "expected a JSON object"]),
    dict(name="corpus-malformed-line", argv=[*BUILD, "--corpus", "{tmp}/c.jsonl"],
         files={"c.jsonl": _jl({"id": "m0", "domain": "malicious", "document": "x"}) + "{oops\n"},
         expect=["{tmp}/c.jsonl:2: malformed JSON"]),
    dict(name="yaml-malformed", argv=["data", "build", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": "sizes: [1\nseed: 2\n"}, expect=["{tmp}/r.yaml", "malformed YAML"], mode="console"),
    dict(name="yaml-malformed-train", argv=["train", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": "learning_rate: [1\nmax_steps: 2\n"}, expect=["{tmp}/r.yaml", "malformed YAML"]),
    dict(name="yaml-not-a-mapping", argv=["data", "build", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": "- sizes\n- tasks\n"}, expect=["{tmp}/r.yaml", "must be a YAML mapping"]),
    dict(name="yaml-empty-file", argv=["generate", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": ""}, expect=["{tmp}/r.yaml", "must be a YAML mapping"]),
    dict(name="yaml-not-utf8", argv=["score", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": b"input: caf\xe9.jsonl\n"}, expect=["{tmp}/r.yaml", "not valid UTF-8"]),
    dict(name="paper-eval-malformed-json",
         argv=["data", "import", "--format", "paper_eval", "--input", "{tmp}/e.json", "--output", "{tmp}/out.jsonl",
               "--domain", "news"],
         files={"e.json": '{"instructions": ["Doc.\\nSummarize the above'}, expect=["{tmp}/e.json", "JSON"]),
    dict(name="paper-eval-wrong-shape",
         argv=["data", "import", "--format", "paper_eval", "--input", "{tmp}/e.json", "--output", "{tmp}/out.jsonl",
               "--domain", "news"],
         files={"e.json": '{"instructions": "one string, not a list", "inputs": []}'},
         expect=["{tmp}/e.json", "instructions"]),
    dict(name="saferpaca-wrong-types",
         argv=["data", "import", "--format", "saferpaca", "--input", "{tmp}/s.json", "--output", "{tmp}/out.jsonl"],
         files={"s.json": '[{"instruction": 3, "input": "", "output": "x"}]'}, expect=["{tmp}/s.json", "instruction"]),
    dict(name="labels-csv-missing-column", argv=["judge-eval", "{tmp}/l.csv"],
         files={"l.csv": "id,task,label,response\n1,summarize,refuse,No.\n"},
         expect=["{tmp}/l.csv", "missing column(s) ['document']"]),
    dict(name="labels-csv-unknown-label", argv=["judge-eval", "{tmp}/l.csv"],
         files={"l.csv": "id,task,label,document,response\n1,summarize,maybe,Doc.,No.\n"},
         expect=["{tmp}/l.csv:2", "label 'maybe'"]),
    # ---------------------------------------------------------------------------------- wrong types
    dict(name="record-id-not-a-string", argv=[*GEN, "--input", "{tmp}/in.jsonl"],
         files={"in.jsonl": _jl({**GOOD, "id": 7})}, expect=["{tmp}/in.jsonl:1", "key 'id' must be a string"]),
    dict(name="record-weight-not-a-number", argv=[*TRAIN[:4], "{tmp}/t.jsonl", *TRAIN[5:]],
         files={"t.jsonl": _jl({**GOOD, "response": "x", "weight": "heavy"})},
         expect=["{tmp}/t.jsonl:1", "key 'weight' must be a non-negative number"]),
    dict(name="record-meta-not-an-object", argv=[*GEN, "--input", "{tmp}/in.jsonl"],
         files={"in.jsonl": _jl({**GOOD, "meta": [1]})}, expect=["{tmp}/in.jsonl:1", "key 'meta' must be an object"]),
    dict(name="flag-not-an-int", argv=[*GEN, "--input", "{tmp}/good.jsonl", "--batch_size", "many"],
         expect=["--batch_size", "invalid int value: 'many'"]),
    dict(name="recipe-value-wrong-type", argv=["train", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": "use_cpu: true\nlearning_rate: fast\n"}, expect=["--learning_rate", "invalid float value: 'fast'"]),
    dict(name="recipe-list-for-a-number", argv=["train", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": "use_cpu: true\nbf16: false\nmax_steps: [1, 2]\n"}, expect=["{tmp}/r.yaml", "max_steps"]),
    dict(name="recipe-sizes-not-positive", argv=["data", "build", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": _recipe_build().replace("sizes: [2]\n", "sizes: [0, -1]\n", 1)},
         expect=["sizes: expected positive integers"]),
    dict(name="corpus-document-not-a-string", argv=[*BUILD, "--corpus", "{tmp}/c.jsonl"],
         files={"c.jsonl": _jl({"id": "m0", "domain": "malicious", "document": 42})},
         expect=["{tmp}/c.jsonl:1", "'document'"]),
    dict(name="score-row-task-missing", argv=[*SCORE, "--input", "{tmp}/in.jsonl"],
         files={"in.jsonl": _jl({k: v for k, v in _gen("a").items() if k != "task"})},
         expect=["{tmp}/in.jsonl:1", "key 'task'"]),
    # ---------------------------------------------------------------------- unknown keys and tasks
    dict(name="record-unknown-key", argv=[*GEN, "--input", "{tmp}/in.jsonl"],
         files={"in.jsonl": _jl({**GOOD, "documnet": "typo"})}, expect=["{tmp}/in.jsonl:1", "['documnet']"]),
    dict(name="recipe-unknown-key", argv=["train", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": "learning_rate: 1.0e-4\nlernin_rate: 3\n"},
         expect=["{tmp}/r.yaml", "unknown recipe key(s) ['lernin_rate']"]),
    dict(name="source-unknown-key", argv=["data", "build", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": _recipe_build().replace("{path: {tmp}/corpus.jsonl}",
                                                  "{path: {tmp}/corpus.jsonl, domian: news}")},
         expect=["['domian']"]),
    dict(name="unknown-flag", argv=[*SCORE, "--input", "{tmp}/gen.jsonl", "--bogus", "1"], expect=["--bogus"],
         mode="console"),
    dict(name="unknown-task-flag", argv=[*BUILD, "--corpus", "{tmp}/corpus.jsonl", "--tasks", "poem"],
         expect=["unknown task 'poem'"]),
    dict(name="unknown-task-in-train-file", argv=[*TRAIN[:4], "{tmp}/t.jsonl", *TRAIN[5:]],
         files={"t.jsonl": _jl({**GOOD, "task": "poem", "response": "x"})},
         expect=["{tmp}/t.jsonl:1", "unknown task 'poem'"]),
    dict(name="unknown-judge", argv=[*SCORE, "--input", "{tmp}/gen.jsonl", "--judges", "rule", "vibes"],
         expect=["unknown judge 'vibes'"]),
    dict(name="unknown-command", argv=["fly"], expect=["invalid choice: 'fly'"], mode="console"),
    dict(name="unknown-backend", argv=[*GEN, "--input", "{tmp}/good.jsonl", "--backend", "onnx"],
         expect=["backend", "'onnx'"]),
    dict(name="unknown-weighting", argv=[*TRAIN, "--weighting", "fancy"], expect=["weighting", "'fancy'"]),
    # ------------------------------------------------------------------ empty, huge, non-UTF-8 input
    dict(name="empty-record-file", argv=[*GEN, "--input", "{tmp}/in.jsonl"], files={"in.jsonl": "\n\n"},
         expect=["{tmp}/in.jsonl: no records"]),
    dict(name="empty-corpus", argv=[*BUILD, "--corpus", "{tmp}/c.jsonl"], files={"c.jsonl": ""},
         expect=["{tmp}/c.jsonl: no documents"]),
    dict(name="empty-document", argv=[*GEN, "--input", "{tmp}/in.jsonl"], files={"in.jsonl": _jl({**GOOD, "document": "  "})},
         expect=["{tmp}/in.jsonl:1", "key 'document' is empty"]),
    dict(name="record-file-not-utf8", argv=[*GEN, "--input", "{tmp}/in.jsonl"],
         files={"in.jsonl": _jl(GOOD).encode() + b'{"id": "b\xff\xfe"}\n'},
         expect=["{tmp}/in.jsonl:2: not valid UTF-8"], mode="console"),
    dict(name="labels-csv-not-utf8", argv=["judge-eval", "{tmp}/l.csv"],
         files={"l.csv": b"id,task,label,document,response\n1,summarize,refuse,caf\xe9,No.\n"},
         expect=["{tmp}/l.csv", "not valid UTF-8"]),
    dict(name="huge-document", argv=[*GEN, "--input", "{tmp}/in.jsonl"],
         files={"in.jsonl": _jl({**GOOD, "document": "word " * 200_000})},
         expect=["1 of 1 prompts do not fit max_model_len", "records a"]),
    # ------------------------------------------------------------------------------- duplicate ids
    dict(name="duplicate-record-ids", argv=[*GEN, "--input", "{tmp}/in.jsonl"], files={"in.jsonl": _jl(GOOD, GOOD)},
         expect=["{tmp}/in.jsonl:2: duplicate id 'a'"]),
    dict(name="duplicate-corpus-ids", argv=[*BUILD, "--corpus", "{tmp}/c.jsonl"],
         files={"c.jsonl": _jl({"id": "m0", "domain": "malicious", "document": "x"},
                               {"id": "m0", "domain": "news", "document": "y"})},
         expect=["{tmp}/c.jsonl:2: duplicate id 'm0'"]),
    dict(name="duplicate-ids-to-score", argv=[*SCORE, "--input", "{tmp}/in.jsonl"],
         files={"in.jsonl": _jl(_gen("a"), _gen("a"))}, expect=["{tmp}/in.jsonl: duplicate ids"]),
    # ---------------------------------------------------------------------- missing model or adapter
    dict(name="model-path-missing", argv=[*GEN, "--input", "{tmp}/good.jsonl", "--model_name_or_path", "{tmp}/no-model"],
         expect=["{tmp}/no-model", "not found"]),
    dict(name="model-dir-without-config", argv=[*GEN, "--input", "{tmp}/good.jsonl", "--model_name_or_path", "{tmp}/m"],
         files={"m/README.md": "not a model\n"}, expect=["{tmp}/m", "no config.json"]),
    dict(name="model-config-malformed", argv=[*GEN, "--input", "{tmp}/good.jsonl", "--model_name_or_path", "{tmp}/m"],
         files={"m/config.json": '{"model_type": "llama", '}, expect=["{tmp}/m", "config.json"]),
    dict(name="model-needs-remote-code", argv=[*GEN, "--input", "{tmp}/good.jsonl", "--model_name_or_path", "{tmp}/m"],
         files={"m/config.json": json.dumps({"model_type": "xtask-custom", "auto_map": {
             "AutoConfig": "custom.Config", "AutoModelForCausalLM": "custom.Model"}}),
             "m/custom.py": "import pathlib\npathlib.Path(__file__).with_name('RAN').write_text('remote code ran')\n"},
         expect=["{tmp}/m", "custom code", "trust_remote_code"]),
    dict(name="adapter-missing", argv=[*GEN, "--input", "{tmp}/good.jsonl", "--adapter", "{tmp}/no-adapter"],
         expect=["{tmp}/no-adapter: directory not found"]),
    dict(name="adapter-pickle-only", argv=[*GEN, "--input", "{tmp}/good.jsonl", "--adapter", "{tmp}/a"],
         files={"a/adapter_config.json": "{}", "a/adapter_model.bin": b"\x80\x04pickle"},
         expect=["{tmp}/a", "only a pickled adapter_model.bin"]),
    dict(name="adapter-config-malformed", argv=[*GEN, "--input", "{tmp}/good.jsonl", "--adapter", "{tmp}/a"],
         files={"a/adapter_config.json": '{"r": 4,', "a/adapter_model.safetensors": b"\x00"},
         expect=["adapter {tmp}/a", "adapter_config.json"]),
    dict(name="adapter-for-another-base-model", argv=[*GEN, "--input", "{tmp}/good.jsonl", "--adapter", "{other_adapter}"],
         expect=["adapter {other_adapter}", "does not fit this base model"]),
    dict(name="train-file-missing", argv=[*TRAIN[:4], "{tmp}/nope.jsonl", *TRAIN[5:]],
         expect=["{tmp}/nope.jsonl: file not found"]),
    dict(name="required-flag-missing", argv=["generate", "--input", "{tmp}/good.jsonl"],
         expect=["--input and --output are required"]),
    # ----------------------------------------------------------- output that is wrong or unwritable
    dict(name="build-output-exists", argv=["data", "build", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": _recipe_build(), "out/keep.txt": "a previous build\n"},
         expect=["{tmp}/out: already exists"]),
    dict(name="output-parent-is-a-file", argv=[*GEN, "--input", "{tmp}/good.jsonl", "--output", "{tmp}/f/out.jsonl"],
         files={"f": "a file, not a directory\n"}, expect=["{tmp}/f/out.jsonl: cannot write"]),
    dict(name="score-output-dir-is-a-file", argv=["score", "--input", "{tmp}/gen.jsonl", "--output_dir", "{tmp}/f"],
         files={"f": "a file\n"}, expect=["{tmp}/f: output directory is not writable"]),
    dict(name="build-output-under-a-file", argv=["data", "build", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": _recipe_build().replace("output_dir: {tmp}/out", "output_dir: {tmp}/f/out"), "f": "x\n"},
         expect=["{tmp}/f/out", "not writable"]),
    dict(name="output-dir-write-protected", argv=[*SCORE[:2], "{tmp}/ro/out", "--input", "{tmp}/gen.jsonl"],
         expect=["{tmp}/ro/out", "not writable"], needs_write_protect=True),
    dict(name="output-from-other-settings", argv=[*GEN, "--input", "{tmp}/good.jsonl"],
         files={"out.jsonl": _jl({**_gen("a"), "meta": {"generation": {
             "model": "other", "adapter": None, "run": "base", "backend": "transformers", "prompt_template": "chat",
             "system_prompt": None, "sampling": {}, "n_tokens": 1, "finish": "stop"}}})},
         expect=["{tmp}/out.jsonl", "other settings"]),
    dict(name="output-not-from-generate", argv=[*GEN, "--input", "{tmp}/good.jsonl"],
         files={"out.jsonl": _jl(GOOD)}, expect=["{tmp}/out.jsonl", "no generation metadata"]),
    dict(name="output-corrupt-in-the-middle", argv=[*GEN, "--input", "{tmp}/good.jsonl"],
         files={"out.jsonl": _jl(_gen("a")) + "{garbage\n" + _jl(_gen("b"))},
         expect=["{tmp}/out.jsonl:2", "malformed line"]),
    dict(name="output-lines-not-objects", argv=[*GEN, "--input", "{tmp}/good.jsonl"],
         files={"out.jsonl": "[1, 2]\n[3]\n"}, expect=["{tmp}/out.jsonl:1", "expected an object with key 'id'"]),
    dict(name="resume-onto-another-run", argv=[*TRAIN, "--resume", "true"],
         files={"out/xtask_run_fingerprint.json": json.dumps({"train_file_sha256": "0" * 64, "settings_sha256": "0"}),
                "out/checkpoint-1/trainer_state.json": '{"global_step": 1}',
                "out/checkpoint-1/adapter_model.safetensors": b"x", "out/checkpoint-1/optimizer.pt": b"x"},
         expect=["{tmp}/out: its checkpoints were trained on a different train_file"]),
    # ----------------------------------------------------------------------------- other bad flags
    dict(name="bad-shard", argv=[*GEN, "--input", "{tmp}/good.jsonl", "--shard", "3/2"], expect=["--shard", "'3/2'"]),
    dict(name="bad-adapters-flag", argv=[*GEN, "--input", "{tmp}/good.jsonl", "--adapters", "d100"],
         expect=["--adapters: expected NAME=DIR, got 'd100'"]),
    dict(name="primary-judge-not-run", argv=[*SCORE, "--input", "{tmp}/gen.jsonl", "--judges", "paper"],
         expect=["primary_judge: 'rule' is not among judges"]),
    dict(name="baseline-shares-no-ids", argv=[*SCORE, "--input", "{tmp}/gen.jsonl", "--baseline", "{tmp}/b.jsonl"],
         files={"b.jsonl": _jl(_gen("zz"))}, expect=["--baseline: {tmp}/b.jsonl shares no record ids"]),
    dict(name="global-batch-not-a-multiple", argv=[*TRAIN, "--global_batch_size", "7", "--per_device_train_batch_size", "2"],
         expect=["global_batch_size 7 is not a multiple"]),
    dict(name="data-subcommand-missing", argv=["data"], expect=["xtask-safety data", "required: COMMAND"]),
    dict(name="command-unknown", argv=["genrate"], expect=["invalid choice: 'genrate'"]),
    # ------------------------------------------------- sizes, token counts, enumerations, task names
    dict(name="set-negative-size", argv=[*BUILD, "--corpus", "{tmp}/corpus.jsonl", "--malicious_per_task", "-5"],
         expect=["malicious_per_task: expected zero or more, got -5"]),
    dict(name="generate-zero-new-tokens", argv=[*GEN[:-4], "--input", "{tmp}/good.jsonl", "--max_new_tokens", "0"],
         expect=["max_new_tokens: expected a positive number, got 0"]),
    dict(name="generate-zero-batch", argv=[*GEN, "--input", "{tmp}/good.jsonl", "--batch_size", "0"],
         expect=["batch_size: expected a positive number, got 0"]),
    dict(name="generate-zero-new-tokens-in-recipe", argv=["generate", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": "input: {tmp}/good.jsonl\noutput: {tmp}/out.jsonl\nmax_new_tokens: 0\n"},
         expect=["max_new_tokens: expected a positive number, got 0"]),
    dict(name="score-unknown-task", argv=[*SCORE, "--input", "{tmp}/in.jsonl"],
         files={"in.jsonl": _jl(_gen("a", task="summarise"))},
         expect=["{tmp}/in.jsonl:1", "unknown task 'summarise'"]),
    dict(name="generate-unknown-task", argv=[*GEN, "--input", "{tmp}/in.jsonl"],
         files={"in.jsonl": _jl({**GOOD, "task": "summarise"})}, expect=["{tmp}/in.jsonl:1", "unknown task 'summarise'"]),
    dict(name="import-unknown-format", argv=["data", "import", "--format", "alpacca", "--input", "{tmp}/s.json",
                                             "--output", "{tmp}/out.jsonl"],
         files={"s.json": "[]"}, expect=["--format", "invalid choice: 'alpacca'"]),
    dict(name="generate-unknown-backend-in-recipe", argv=["generate", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": "input: {tmp}/good.jsonl\noutput: {tmp}/out.jsonl\nbackend: vlm\n"},
         expect=["backend: expected one of transformers, vllm, got 'vlm'"]),
    dict(name="demo-negative-eval-docs", argv=["demo", "--output_dir", "{tmp}/out", "--eval_docs_per_domain", "-3"],
         expect=["eval_docs_per_domain: expected a positive number (0: all), got -3"]),
    dict(name="recipe-genre-match-out-of-range", argv=["data", "build", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": _recipe_build() + "genre_match: 1.5\n"},
         expect=["genre_match: expected a number from 0 to 1, got 1.5"]),
    dict(name="recipe-source-holdout-not-bool", argv=["data", "build", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": _recipe_build().replace("corpus.jsonl}", "corpus.jsonl, holdout: sometimes}")},
         expect=["sources[0]: holdout must be true or false, got 'sometimes'"]),
    dict(name="report-negative-examples", argv=["report", "{tmp}", "--output_dir", "{tmp}/out", "--examples", "-1"],
         expect=["examples: expected zero or more, got -1"]),
    dict(name="eval-zero-limit", argv=["eval", "--output_dir", "{tmp}/out", "--limit", "0"],
         expect=["limit: expected a positive number, got 0"]),
    dict(name="judge-eval-zero-resamples", argv=["judge-eval", "--n_resamples", "0"],
         expect=["n_resamples: expected a positive number, got 0"]),
    dict(name="inspect-path-missing", argv=["data", "inspect", "{tmp}/nothing.jsonl"], expect=["{tmp}/nothing.jsonl"]),
    # ------------------------------------------------------------------------------- a full disk
    dict(name="disk-full-data-build", argv=["data", "build", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": _recipe_build()}, expect=["{tmp}/out", "No space left on device"], mode="enospc"),
    dict(name="disk-full-legacy-build", argv=[*BUILD, "--corpus", "{tmp}/corpus.jsonl"],
         expect=["{tmp}/out.jsonl: cannot write", "No space left on device"], mode="enospc"),
    dict(name="disk-full-generate", argv=[*GEN, "--input", "{tmp}/good.jsonl"],
         expect=["{tmp}/out.jsonl: cannot write", "No space left on device"], mode="enospc"),
    dict(name="disk-full-score", argv=[*SCORE, "--input", "{tmp}/gen.jsonl"],
         expect=["{tmp}/out/", "No space left on device"], mode="enospc"),
    dict(name="disk-full-import", argv=["data", "import", "--format", "saferpaca", "--input", "{tmp}/s.json",
                                        "--output", "{tmp}/out.jsonl"],
         files={"s.json": json.dumps([{"instruction": f"Say {k}.", "input": "", "output": "ok"} for k in range(3)])},
         expect=["{tmp}/out.jsonl: cannot write", "No space left on device"], mode="enospc"),
    dict(name="file-size-limit-data-build", argv=["data", "build", "--config", "{tmp}/r.yaml"],
         files={"r.yaml": _recipe_build()}, expect=["{tmp}/out", "File too large"], mode="fsize"),
    # training: the checkpoint being written when the disk filled up is removed; what a rerun with --resume
    # needs stays (the run fingerprint, and the trainer's model card written at each checkpoint)
    dict(name="file-size-limit-train", argv=[*TRAIN[:13], "--max_steps", "2", "--save_strategy", "steps",
                                             "--save_steps", "1", "--use_peft", "true", "--lora_r", "2"],
         expect=["{tmp}/out: cannot write a checkpoint or the adapter", "File too large", "--resume true"],
         mode="fsize-fork", may_leave=["out", "out/xtask_run_fingerprint.json", "out/README.md"]),
    dict(name="file-size-limit-score", argv=[*SCORE, "--input", "{tmp}/gen.jsonl"],
         expect=["{tmp}/out/", "File too large"], mode="fsize"),
]
