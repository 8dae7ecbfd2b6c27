"""Mine unlabeled images for SSLD: de-duplicate against eval, score with the teacher, keep top-k per class.

Usage: python tools/select_unlabeled.py -c CONFIG [-o key=value] --pool LIST_OR_DIR --image-root DIR
       --eval-list LIST --k K --out DIR [--train-list LIST] [--min-conf P] [--cap N] ...
Sharded: python -m paddle.distributed.launch --gpus 0,1 tools/select_unlabeled.py ... (same arguments; scoring,
reference hashing and de-duplication are split across the processes, rank 0 selects; same list as one process).
"""
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppssld.utils.deps import missing_dependency_exits  # noqa: E402  (standard library only)

with missing_dependency_exits():  # no Paddle, PyYAML, ...: one line and status 2, not a traceback
    from ppssld.config import get, load_config  # noqa: E402
    from ppssld.engine import cli  # noqa: E402
    from ppssld.engine.distributed import use_device  # noqa: E402
    from ppssld.mining import dedup, teacher as teachers  # noqa: E402
    from ppssld.mining.pipeline import mine  # noqa: E402
    from ppssld.utils.logger import setup_logging  # noqa: E402

logger = logging.getLogger("ppssld.tools.select_unlabeled")


def main() -> None:
    """Parse arguments, build the teacher, run the mining pipeline."""
    p = cli.base_parser(__doc__.splitlines()[0])  # -c (config with the Teacher and eval transforms), -o
    p.add_argument("--pool", required=True), p.add_argument("--image-root"), p.add_argument("--eval-list", required=True)
    p.add_argument("--train-list", help="also de-duplicate against this labeled list")
    p.add_argument("--k", type=int, required=True), p.add_argument("--out", required=True)
    p.add_argument("--topn", type=int, default=10), p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--chunk-size", type=int, default=1024), p.add_argument("--min-conf", type=float, default=0.0)
    p.add_argument("--cap", type=int), p.add_argument("--features", action="store_true")
    p.add_argument("--feature-threshold", type=float, help="also remove by teacher-feature cosine >= this")
    p.add_argument("--hash-threshold", type=int, default=dedup.DEFAULT_THRESHOLD)
    p.add_argument("--pixel-thresholds", type=float, nargs=2, default=list(dedup.DEFAULT_PIXEL_THRESHOLDS))
    p.add_argument("--teacher-weights", help="a .pdparams instead of the config's teacher (with --teacher-backbone)")
    p.add_argument("--teacher-backbone"), p.add_argument("--inference-model", help="exported model prefix")
    p.add_argument("--restart", action="store_true", help="discard scores of a different run in OUT/scores")
    args = p.parse_args()
    setup_logging()
    config = load_config(args.config, cli.flat_overrides(args.override, args.trust_weights))
    use_device(get(config, "Global.device"))
    if args.inference_model:
        teacher = teachers.teacher_from_inference(args.inference_model, trust=args.trust_weights)
    elif args.teacher_weights:
        class_num = int(config.get("Arch", {}).get("class_num") or 1000)
        teacher = teachers.teacher_from_weights(args.teacher_backbone, args.teacher_weights, class_num,
                                                trust=args.trust_weights)
    else:
        teacher = teachers.teacher_from_config(config)
    report = mine(teacher, config, args.pool, args.image_root, args.eval_list, args.k, args.out, args.train_list,
                  args.topn, args.batch_size, args.chunk_size, args.min_conf, args.cap, args.features,
                  args.feature_threshold, args.hash_threshold, tuple(args.pixel_thresholds), args.restart)
    if report is not None:
        print(f"selected {report['selected']} of {report['scored']} scored images -> {args.out}/selected_list.txt; "
              f"{report['dedup']['removed']} duplicates removed, {report['unreadable']} unreadable")


if __name__ == "__main__":
    cli.run(main)
