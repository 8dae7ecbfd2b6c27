"""Run under ``paddle.distributed.launch`` by tests/test_distributed.py (not a test itself).

Usage: dist_driver.py train|eval CONFIG OUT_DIR [CHECKPOINT]

Test hooks, all through the environment and all applied here, never in the library:
``DIST_TEST_SPLIT_OUTPUT=1`` gives rank r the output folder ``<Global.output_dir>/rank<r>`` (so the
test can see what each rank wrote); ``DIST_TEST_POISON=R:S`` makes rank R's loss infinite at step S;
``DIST_TEST_KILL=R:S`` makes rank R ``kill -9`` itself at step S; ``DIST_TEST_BN_EVAL=1`` keeps
every BatchNorm layer in eval mode while training (running statistics, no per-rank batch statistics). BatchNorm statistics are dumped per
rank just before they are averaged (``bn_pre_rank<r>.npz``).
"""
import copy
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from ppssld.utils.config import load_config  # noqa: E402
from ppssld.engine import distributed  # noqa: E402
from ppssld.engine.builder import build_eval_pieces, build_full_model, build_trainer, prepare_runtime  # noqa: E402
from ppssld.engine.checkpoint import Checkpointer  # noqa: E402
from ppssld.engine.evaluator import evaluate  # noqa: E402
from ppssld.utils.logger import setup_logging  # noqa: E402


def _hook(name: str):
    value = os.environ.get(name)
    if not value:
        return None
    rank, step = value.split(":")
    return int(rank), int(step)


def _install_hooks(trainer, out: str) -> None:
    rank = distributed.rank()
    poison, kill = _hook("DIST_TEST_POISON"), _hook("DIST_TEST_KILL")
    forward, calls = trainer.loss_fn.forward, {"n": 0}

    def hooked_loss(outputs, labels):
        calls["n"] += 1
        parts = forward(outputs, labels)
        if kill and kill == (rank, calls["n"]):
            os.kill(os.getpid(), signal.SIGKILL)
        if poison and poison == (rank, calls["n"]):
            parts = dict(parts, loss=parts["loss"] * float("inf"))
        return parts

    trainer.loss_fn.forward = hooked_loss  # the loss stays a Layer (the trainer sets its mode, saves its state)
    if os.environ.get("DIST_TEST_BN_EVAL"):
        model, train = trainer.model, trainer.model.train

        def train_with_frozen_bn():
            train()
            for layer in model.sublayers():
                if isinstance(layer, (paddle.nn.BatchNorm2D, paddle.nn.BatchNorm)):
                    layer.eval()

        model.train = train_with_frozen_bn
    average = distributed.average_buffers

    def dumping_average(layer, skip_prefixes=()):
        state = {k: v.numpy().copy() for k, v in layer.state_dict().items() if "_mean" in k or "_variance" in k}
        np.savez(os.path.join(out, f"bn_pre_rank{rank}.npz"), **state)
        return average(layer, skip_prefixes=skip_prefixes)

    distributed.average_buffers = dumping_average


def main() -> None:
    mode, config_path, out = sys.argv[1:4]
    setup_logging()
    config = load_config(config_path)
    rank = distributed.rank()
    if mode == "train":
        if os.environ.get("DIST_TEST_SPLIT_OUTPUT"):
            config = copy.deepcopy(config)
            config["Global"]["output_dir"] = os.path.join(config["Global"]["output_dir"], f"rank{rank}")
        trainer = build_trainer(config)
        _install_hooks(trainer, out)
        trainer.fit()
        state = {k: v.numpy() for k, v in trainer.model.state_dict().items()}
        np.savez(os.path.join(out, f"weights_rank{rank}_ws{distributed.world_size()}.npz"), **state)
    else:
        prepare_runtime(config)
        model = build_full_model(config, resume=True)
        Checkpointer.load(sys.argv[4], model, restore_rng=False)
        loader, metrics, loss = build_eval_pieces(config)
        results = evaluate(model, loader, metrics, loss, epoch=0)
        with open(os.path.join(out, f"eval_ws{distributed.world_size()}_rank{rank}.json"), "w") as handle:
            json.dump(results, handle)


if __name__ == "__main__":
    main()
