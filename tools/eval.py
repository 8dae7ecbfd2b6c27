"""Evaluate a checkpoint: tools/eval.py -c cfg.yaml -o Global.pretrained_model=output/.../best_model."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppssld.utils.deps import missing_dependency_exits  # noqa: E402  (standard library only)

with missing_dependency_exits():  # no Paddle, PyYAML, ...: one line and status 2, not a traceback
    from ppssld.utils import cli  # noqa: E402  (after the path set-up)
    from ppssld.engine.builder import build_eval_model, build_eval_pieces, eval_amp, prepare_runtime, validate  # noqa: E402
    from ppssld.engine.evaluator import evaluate  # noqa: E402
    from ppssld.utils.errors import ConfigError  # noqa: E402


def main() -> None:
    """Parse, build (only the model evaluated), evaluate; ends with PaddleClas's ``[Eval][Epoch 0][Avg]...`` line."""
    args = cli.base_parser("Evaluate a model with ppssld").parse_args()
    config = cli.load(args)
    validate(config)
    prepare_runtime(config)
    model, amp = eval_amp(config, build_eval_model(config))
    loader, metrics, loss = build_eval_pieces(config)
    if loader is None:
        raise ConfigError(f"{args.config}: DataLoader.Eval is missing: nothing to evaluate on")
    evaluate(model, loader, metrics, loss, epoch=0, amp=amp)


if __name__ == "__main__":
    cli.run(main)
