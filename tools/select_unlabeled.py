"""Mine unlabeled images for SSLD: de-duplicate against eval, score with the teacher, keep top-k per class.

Usage: python tools/select_unlabeled.py -c CONFIG [-o key=value] --pool LIST_OR_DIR --image-root DIR
       --eval-list LIST --k K --out DIR [--max-pool N] [--train-list LIST] [--min-conf P] [--cap N] ...
The teacher scores the whole pool whatever --k is (~9 ms per image on a 2-core CPU): --max-pool N bounds it.
Sharded: python -m paddle.distributed.launch --gpus 0,1 tools/select_unlabeled.py ... (same arguments; scoring,
reference hashing and de-duplication are split across the processes, rank 0 selects; same list as one process).
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppssld.utils.deps import missing_dependency_exits  # noqa: E402  (standard library only)

with missing_dependency_exits():  # no Paddle, PyYAML, ...: one line and status 2, not a traceback
    from ppssld.utils.config import get, load_config  # noqa: E402
    from ppssld.utils import cli  # noqa: E402
    from ppssld.engine.distributed import use_device  # noqa: E402
    from ppssld.teacher import frozen as teachers  # noqa: E402
    from ppssld.mining.dedup import near_duplicates as dedup  # noqa: E402
    from ppssld.mining.mine import mine, sample_pool  # noqa: E402
    from ppssld.mining.settings import ARGUMENTS, check_folders, check_settings, check_teacher_source  # noqa: E402
    from ppssld.utils.folder_lock import holding  # noqa: E402
    from ppssld.utils.logger import setup_logging  # noqa: E402

logger = logging.getLogger("ppssld.tools.select_unlabeled")

DESCRIPTION = __doc__.splitlines()[0] + """

How long: the teacher scores EVERY pool image whatever --k is (k only picks among the scored images). Estimate
from one measurement: about 9 ms per image, 513 s for a 55,000-image pool on a 2-core CPU at OMP_NUM_THREADS=1
(a bigger teacher or larger images take longer). To bound it, score a seeded random sample: --max-pool N
(the main job's mine.pool does the same), or split the scoring over processes with
python -m paddle.distributed.launch. Scores are kept in OUT/scores: a re-run resumes where one stopped."""


def build_parser() -> argparse.ArgumentParser:
    """The command line: base_parser's -c/-o/--trust-weights/--debug and the mining options."""
    p = cli.base_parser(DESCRIPTION)  # -c (config with the Teacher and eval transforms), -o
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the description's paragraphs
    p.add_argument("--pool", required=True, help="the unlabeled images: a label list (paths relative to "
                   "--image-root; labels ignored) or a folder, walked recursively (required)")
    p.add_argument("--image-root", help="folder the paths of a pool list, --eval-list and --train-list are "
                   "relative to (required with a pool list; default: the pool folder)")
    p.add_argument("--eval-list", required=True, help="evaluation label list: pool images that are near-duplicates "
                   "of its images are removed (required)")
    p.add_argument("--train-list", help="also de-duplicate against this labeled list (default: eval list only)")
    p.add_argument("--k", type=int, required=True, help="images kept per class, the teacher's most confident "
                   "(required; does not shorten scoring: see --max-pool)")
    p.add_argument("--out", required=True, help="output folder: selected_list.txt, selected_classes.txt, "
                   "report.json, per_class.png, scores/ (required)")
    p.add_argument("--max-pool", type=int, default=None, metavar="N", help="score only a seeded random sample of "
                   "N pool images, written to OUT/pool_sample.txt (default: the whole pool)")
    p.add_argument("--seed", type=int, default=None, help="seed of the --max-pool sample, in [0, 2**32) "
                   "(default: the config's Global.seed, else 0)")
    p.add_argument("--topn", type=int, default=10, help="teacher probabilities stored per image, its top N classes "
                   "(capped at the class count); a class can only pick an image whose top N holds it (default 10)")
    p.add_argument("--batch-size", type=int, default=64, help="images per teacher forward pass (default 64)")
    p.add_argument("--chunk-size", type=int, default=1024, help="images per score file in OUT/scores, the unit "
                   "of resumption (default 1024)")
    p.add_argument("--min-conf", type=float, default=0.0, help="minimum teacher probability, 0 to 1, for an image "
                   "to be a class's candidate (default 0.0: no minimum)")
    p.add_argument("--cap", type=int, help="at most this many images in total, taken rank by rank across the "
                   "classes to stay balanced (default: no cap, up to k per class)")
    p.add_argument("--features", action="store_true", help="also store the teacher's penultimate features with "
                   "the scores (default: off; implied by --feature-threshold)")
    p.add_argument("--feature-threshold", type=float, help="also remove pool images whose teacher-feature cosine "
                   "to an eval image is >= this, -1 to 1 (eval images are scored too; default: off)")
    p.add_argument("--hash-threshold", type=int, default=dedup.DEFAULT_THRESHOLD, help="largest Hamming distance, "
                   "in bits of the 64-bit dhash, for a pool/eval pair to be a duplicate candidate "
                   "(default %(default)s)")
    p.add_argument("--pixel-thresholds", type=float, nargs=2, default=list(dedup.DEFAULT_PIXEL_THRESHOLDS),
                   metavar=("HIGH", "BAND"), help="high-pass and band-pass correlations after alignment that a "
                   "candidate must both reach to be removed as a duplicate (default %(default)s)")
    p.add_argument("--teacher-weights", help="a .pdparams/.safetensors teacher instead of the config's, built as "
                   "--teacher-backbone (default: the config's Teacher)")
    p.add_argument("--teacher-backbone", help="zoo backbone name of --teacher-weights, e.g. ResNet50_vd "
                   "(default: none; needed with --teacher-weights)")
    p.add_argument("--inference-model", help="an exported model's path prefix (without .json/.pdiparams) as the "
                   "teacher; whether it ends in a softmax is read from the inference.yml beside it, else from the graph "
                   "(default: the config's Teacher)")
    p.add_argument("--restart", action="store_true", help="discard scores of a different run in OUT/scores "
                   "(default: off, such scores are an error)")
    return p


def main() -> None:
    """Parse arguments, build the teacher, run the mining pipeline."""
    args = build_parser().parse_args()
    check_settings({key: getattr(args, key) for key in ARGUMENTS}, ARGUMENTS)  # before any file is read
    check_teacher_source(args.inference_model, args.teacher_weights, args.teacher_backbone)
    check_folders(args.image_root, args.out, ARGUMENTS)
    with holding(args.out, "--out"):  # one mining per folder, from the pool sample on (mine() takes it again)
        _mine(args)


def _mine(args: argparse.Namespace) -> None:
    """Load the config, sample the pool, build the teacher, mine (the folder lock held)."""
    setup_logging()
    config = load_config(args.config, cli.flat_overrides(args.override, args.trust_weights))
    use_device(get(config, "Global.device"))
    seed = args.seed if args.seed is not None else (get(config, "Global.seed") or 0)
    pool, image_root = sample_pool(args.pool, args.image_root, args.max_pool, seed,
                                   os.path.join(args.out, "pool_sample.txt"), size_name="--max-pool",
                                   seed_name="--seed" if args.seed is not None else "Global.seed")
    if args.inference_model:
        teacher = teachers.teacher_from_inference(args.inference_model, trust=args.trust_weights)
    elif args.teacher_weights:
        class_num = int(config.get("Arch", {}).get("class_num") or 1000)
        teacher = teachers.teacher_from_weights(args.teacher_backbone, args.teacher_weights, class_num,
                                                trust=args.trust_weights)
    else:
        teacher = teachers.teacher_from_config(config)
    report = mine(teacher, config, pool, image_root, args.eval_list, args.k, args.out, args.train_list,
                  args.topn, args.batch_size, args.chunk_size, args.min_conf, args.cap, args.features,
                  args.feature_threshold, args.hash_threshold, tuple(args.pixel_thresholds), args.restart,
                  names=ARGUMENTS)
    if report is not None:
        print(f"selected {report['selected']} of {report['scored']} scored images -> {args.out}/selected_list.txt; "
              f"{report['dedup']['removed']} duplicates removed, {report['unreadable']} unreadable")


if __name__ == "__main__":
    cli.run(main)
