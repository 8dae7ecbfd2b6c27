"""Train (distil) a model: python -m paddle.distributed.launch tools/train.py -c cfg.yaml -o k=v."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppssld.utils.deps import missing_dependency_exits  # noqa: E402  (standard library only)

with missing_dependency_exits():  # no Paddle, PyYAML, ...: one line and status 2, not a traceback
    from ppssld.utils import cli  # noqa: E402  (after the path set-up)
    from ppssld.engine.builder import build_trainer  # noqa: E402
    from ppssld.engine.teacher_report import report_frozen_models  # noqa: E402


def main() -> None:
    """Parse, build, train."""
    args = cli.base_parser("Train or distil a model with ppssld").parse_args()
    config = cli.load(args, log_name="train.log")
    trainer = build_trainer(config)
    if trainer.start_epoch == 1:
        report_frozen_models(config, trainer.model, trainer.eval_loader)
    trainer.fit()


if __name__ == "__main__":
    cli.run(main)
