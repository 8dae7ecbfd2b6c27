"""Cache a frozen teacher's soft labels: tools/cache_soft_labels.py -c distill.yaml --views V --topk K --out DIR.

Train from the cache with ``-o Global.soft_label_cache=DIR`` (see ppssld/cache/). Run under
``python -m paddle.distributed.launch`` to shard the work over processes; re-run to resume.
``tools/cache_soft_labels.py --verify DIR`` checks a whole cache (every chunk's header, size and content
hash): status 0, or 2 with the files that do not match.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppssld.utils.deps import missing_dependency_exits  # noqa: E402  (standard library only)

with missing_dependency_exits():  # no Paddle, PyYAML, ...: one line and status 2, not a traceback
    from ppssld.utils import cli  # noqa: E402  (after the path set-up)


def main() -> None:
    """Parse, generate, print the statistics."""
    parser = cli.base_parser("Cache the frozen teacher's top-K soft labels for V augmented views of every "
                             "training image", config_required=False,
                             config_help="YAML distillation config (required to write a cache; default: none)")
    parser.add_argument("--verify", metavar="DIR", help="check the cache in DIR instead of writing one: every chunk "
                        "file's header, size and content hash against its manifest; status 0, or 2 with the "
                        "files that do not match (takes no other argument; default: off, a cache is written)")
    parser.add_argument("--views", type=int, help="views V per image (view v = epoch v+1's augmentation; required to write a "
                        "cache, no default)")
    parser.add_argument("--topk", type=int, help="classes K kept per view (K = class count: exact; required to write a cache, "
                        "no default)")
    parser.add_argument("--out", help="cache folder (re-run with the same arguments to resume; required to write a "
                        "cache, no default)")
    parser.add_argument("--chunk-size", type=int, default=1024, help="images per chunk file (default 1024)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="teacher batch (default: DataLoader.Train.sampler.batch_size)")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                        help="stored probability type (default float16; float32 with K = class count: exact)")
    parser.add_argument("--values", choices=("auto", "probs", "logits"), default="auto",
                        help="what the chunks hold: auto (default) stores the teacher's logits when K = class count "
                             "and --dtype float32, so training repeats online distillation's arithmetic, else "
                             "probabilities")
    parser.add_argument("--workers", type=int, default=2, help="image-reading threads (default 2)")
    args = parser.parse_args()
    if args.verify is not None:
        from ppssld.cache.integrity import verify_cache

        print(json.dumps(verify_cache(args.verify)))
        return
    missing = [flag for flag, value in (("-c", args.config), ("--views", args.views), ("--topk", args.topk),
                                        ("--out", args.out)) if value is None]
    if missing:
        parser.error(f"the following arguments are required to write a cache: {', '.join(missing)} "
                     f"(or --verify DIR to check one)")
    config = cli.load(args)
    from ppssld.cache.generate import generate
    from ppssld.utils.config import get
    from ppssld.engine.distributed import use_device

    use_device(get(config, "Global.device"))
    stats = generate(config, args.out, args.views, args.topk, chunk_size=args.chunk_size,
                     batch_size=args.batch_size, prob_dtype=args.dtype, workers=args.workers,
                     values=args.values)
    print(json.dumps(stats))


if __name__ == "__main__":
    cli.run(main)
