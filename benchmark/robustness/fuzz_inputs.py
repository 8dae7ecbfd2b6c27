"""The input fuzzer's sweep: bad values in config keys, in a tiny trained project and in tool arguments, counted.

Run: python benchmark/robustness/fuzz_inputs.py [--config-cases N] [--train-cases N] [--cli-cases N] [--all] [--seed S]
Defaults take ~4.5 minutes on a 2-core CPU (a seeded sample of each kind); ``--all`` runs every case (config
keys alone are ~32,600 cases, ~10 minutes; all ~34,700 about 25 minutes, estimated). Cases and outcomes:
tests/fuzz_harness.py. Writes benchmark/results/robustness/fuzz_inputs.{md,json}: cases tried, outcomes by kind, every
traceback or hang (the target is none), and the refusals whose message does not name the key, grouped.
"""
import argparse
import collections
import os
import re
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark.common import ROOT, results_dir, write_results  # noqa: E402

from tests.fuzz_harness import (CLI_ARGUMENTS, cli_argv, cli_cases, config_cases, config_files,  # noqa: E402
                                run_cli_case, run_config_case, run_train_case, sample, summary, tiny_project)


def _pattern(message: str) -> str:
    """A refusal's message with paths, numbers and quoted values blanked, to group alike ones."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", message.splitlines()[0] if message else "")
    text = re.sub(r"/[^\s:,)]+", "<path>", text)
    return re.sub(r"-?\d+(\.\d+)?(e[+-]?\d+)?", "N", text)[:160]


def main() -> None:
    """Run the sweep and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-cases", type=int, default=4000, help="config-key cases (default 4000)")
    parser.add_argument("--train-cases", type=int, default=100, help="tiny-project training cases (default 100)")
    parser.add_argument("--cli-cases", type=int, default=150, help="tool-argument cases (default 150)")
    parser.add_argument("--all", action="store_true", help="every case of every kind (default: the samples)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)  # thousands of refused cases: their log lines are not the result
    every = 10 ** 9 if args.all else None
    start = time.perf_counter()
    config = [c for path in config_files() for c in config_cases(path)]
    seconds = {}
    outcomes = [run_config_case(c) for c in sample(config, every or args.config_cases, args.seed)]
    seconds["config"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="fuzz_inputs_") as root:
        project = tiny_project(root)
        train = config_cases(project["config"], kind="train")
        t0 = time.perf_counter()
        outcomes += [run_train_case(c, project["config"]) for c in sample(train, every or args.train_cases, args.seed)]
        seconds["train"] = time.perf_counter() - t0
        cli = [c for tool, names in CLI_ARGUMENTS.items() for c in cli_cases(tool, names)]
        t0 = time.perf_counter()
        outcomes += [run_cli_case(c, cli_argv(c, project, os.path.join(root, f"cli{i}")))
                     for i, c in enumerate(sample(cli, every or args.cli_cases, args.seed))]
        seconds["cli"] = time.perf_counter() - t0
    counts = summary(outcomes)
    failures = [{"kind": o.case.kind, "target": os.path.relpath(o.case.target, ROOT), "key": o.case.key,
                 "value": o.case.text, "result": o.result, "detail": o.detail[-800:]}
                for o in outcomes if o.result in ("crash", "hang")]
    by_tool = collections.Counter(o.case.target for o in outcomes if o.case.kind == "cli")
    unnamed = collections.Counter(_pattern(o.detail) for o in outcomes if o.result == "refused" and not o.named)
    payload = {"available": {"config": len(config), "train": len(train), "cli": len(cli)}, **counts,
               "seconds": {k: round(v, 1) for k, v in seconds.items()}, "failures": failures,
               "unnamed_refusals": unnamed.most_common(25), "cli_by_tool": dict(by_tool), "seed": args.seed, "all": args.all}
    rows = "\n".join(f"| {kind} | {payload['available'][kind]:,} | {sum(r[k] for k in ('accepted', 'refused', 'crash', 'hang')):,} "
                     f"| {r['accepted']:,} | {r['refused']:,} | {r['refused_unnamed']:,} | {r['crash']} | {r['hang']} "
                     f"| {payload['seconds'][kind]} s |" for kind, r in counts["by_kind"].items())
    unnamed_rows = "\n".join(f"| {n} | `{p}` |" for p, n in unnamed.most_common(12))
    markdown = (f"**{counts['cases']:,} cases, {counts['tracebacks']} tracebacks, {counts['hangs']} hangs** "
                f"({'every case' if args.all else f'seeded samples, seed {args.seed}'}).\n\n"
                "| kind | cases available | tried | accepted | refused (ppssld error) | of which not naming the key "
                "| traceback | hang | time |\n|---|---|---|---|---|---|---|---|---|\n" + rows + "\n\n"
                "A case is one bad value (0, -1, 1e12, NaN, 'abc', '', [], {}, null, a missing path, a path with spaces "
                "and non-ASCII, a folder where a file belongs and back, a value wrapped in a list or a list "
                "unwrapped) at one key of a shipped or PaddleClas fixture config (`load_config` + `validate`), of a "
                "tiny project trained one epoch (`build_trainer` + `fit`), or at one argument of "
                "every `tools/*.py` and `deploy/python/predict_cls.py` (run under `cli.run`, as from the shell, through "
                "the tool's first real work: one epoch, an evaluation, an export, a prediction, a dry-run search; "
                "not `ssld_pipeline.py`, whose first work is the whole pipeline, nor `hub_serving_local.py`, a server); "
                "each case runs in a fresh scratch folder, its paths relative to it. CLI cases by tool: "
                + ", ".join(f"`{os.path.basename(t)}` {n}" for t, n in sorted(by_tool.items())) + ". Running "
                "as root, an unreadable path cannot be made (root reads every file), so none is tried.\n\n"
                + ("Tracebacks and hangs:\n\n" + "\n".join(f"- {f['kind']} {f['target']} `{f['key']}={f['value']}`: "
                                                           f"{f['detail'].strip().splitlines()[-1]}" for f in failures)
                   + "\n\n" if failures else "")
                + "Refusals whose message does not name the key (grouped; the message still names the value or "
                  "file):\n\n| cases | message |\n|---|---|\n" + (unnamed_rows or "| 0 | |") + "\n")
    print(write_results("fuzz_inputs", payload, markdown, results_dir(__file__)))


if __name__ == "__main__":
    main()
