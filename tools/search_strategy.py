"""PaddleClas's hyper-parameter search on ppssld: tools/search_strategy.py -c search.yaml [-o k=v] [--dry-run].

Runs the trials of a PULC ``search.yaml`` in PaddleClas's order (:mod:`ppssld.recipes.search`) with ppssld's
trainer and writes ``<output_dir>/search_result.json``. ``-o`` overrides apply to every trial (e.g.
``Global.device=cpu`` or data paths). ``--dry-run`` lists the trials and builds each instead of training.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppssld.utils.deps import missing_dependency_exits  # noqa: E402  (standard library only)

with missing_dependency_exits():  # no Paddle, PyYAML, ...: one line and status 2, not a traceback
    from ppssld.recipes import search  # noqa: E402  (after the path set-up)
    from ppssld.utils import cli  # noqa: E402
    from ppssld.utils.io import atomic_write_json  # noqa: E402
    from ppssld.utils.logger import setup_logging  # noqa: E402


def main() -> None:
    """Parse, plan, run (or build) every trial, write the summary."""
    parser = argparse.ArgumentParser(description="PaddleClas's greedy hyper-parameter search, run with ppssld")
    parser.add_argument("-c", "--config", required=True, help="a PaddleClas search file (PULC search.yaml; "
                        "required)")
    cli.override_argument(parser, "override applied to every trial config, Section.key=VALUE (VALUE is read as "
                          "YAML), e.g. -o Global.device=cpu; several after one -o or repeat -o (default: none)")
    parser.add_argument("--dry-run", action="store_true", help="list and build every trial, train nothing "
                        "(default: off, every trial is trained)")
    args = cli.add_debug_flag(parser).parse_args()
    setup_logging()
    plan = search.load_search(args.config)
    extra = cli.flat_overrides(args.override)
    step = search.build_trial if args.dry_run else search.train_trial
    outcome = search.run_search(plan, lambda trial: step(trial, extra))
    for n, trial in enumerate(outcome["trials"], start=1):
        print(f"{n:3d}. {trial.stage}={trial.value!r} run {trial.repeat}: {trial.config_file} "
              f"-o {' '.join(trial.overrides)}")
    if not args.dry_run:
        atomic_write_json(os.path.join(plan.output_dir, "search_result.json"), search.summary(outcome))
    print({key: res["best"] for key, res in outcome["results"].items()})


if __name__ == "__main__":
    cli.run(main)
