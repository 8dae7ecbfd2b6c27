"""The main job's distill stage online vs from the soft-label cache (cache generation included), wall time.

Runs the pipeline's own distill stage (``Pipeline._distill``) on the data, teacher and mined list of a finished
main-job output (``--from``: its data/teacher/mine ``stage.json``), once per ``--mode``, into ``--out/<mode>``;
appends the timing to ``--json``. Command (one mode per lock hold):

    flock /tmp/ppssld-heavy.lock python benchmark/throughput/main_job_cache.py --from output/fashion_mnist_ssld \
        --out /tmp/bench --mode online   # appends to benchmark/results/throughput/main_job_cache.json
"""
import argparse
import json
import logging
import os
import shutil
import sys
import time

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark.common import ROOT, machine, results_dir  # noqa: E402

from ppssld.recipes.ssld import Pipeline, load_pipeline_config  # noqa: E402
from ppssld.utils.io import atomic_write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", required=True, help="a finished main-job output folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--mode", choices=("online", "cached"), required=True)
    parser.add_argument("--json", default=os.path.join(results_dir(__file__), "main_job_cache.json"),
                        help="results file, appended (default: benchmark/results/throughput/main_job_cache.json)")
    parser.add_argument("-c", "--config", default=os.path.join(
        ROOT, "ppcls_configs", "quick_start", "fashion_mnist", "ssld_pipeline.yaml"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    out = os.path.join(args.out, args.mode)
    if os.path.isdir(out):
        shutil.rmtree(out)
    cfg = load_pipeline_config(args.config, [f"output_dir={out}",
                                             f"distill.soft_label_cache={str(args.mode == 'cached').lower()}"])
    pipeline = Pipeline(cfg)
    for stage in ("data", "teacher", "mine"):
        path = os.path.join(args.source, stage, "stage.json")
        if stage == "mine" and not os.path.isfile(path):
            continue  # mining off: the distill stage reads the whole pool
        with open(path, encoding="utf-8") as handle:
            pipeline.results[stage] = json.load(handle)
    tic = time.time()
    result = pipeline._distill()  # pylint: disable=protected-access  (the stage itself, timed)
    wall = time.time() - tic
    row = {"mode": args.mode, "wall_s": round(wall, 1), "top1": result["top1"], "epochs": result["epochs"],
           "images_per_epoch": result["images_per_epoch"], "cache": result.get("soft_label_cache"),
           "source": args.source, "teacher": pipeline.results["teacher"].get("arch"),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine()}
    rows = []
    if os.path.isfile(args.json):
        with open(args.json, encoding="utf-8") as handle:
            rows = json.load(handle)
    atomic_write_json(args.json, rows + [row])
    print(json.dumps({k: row[k] for k in ("mode", "wall_s", "top1", "cache")}))


if __name__ == "__main__":
    main()
