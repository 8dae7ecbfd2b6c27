"""Run under ``paddle.distributed.launch`` by tests/test_distributed.py (not a test itself).

Usage: dist_driver.py train|eval CONFIG OUT_DIR [CHECKPOINT]
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from ppssld.config import load_config  # noqa: E402
from ppssld.engine import distributed  # noqa: E402
from ppssld.engine.builder import build_eval_pieces, build_full_model, build_trainer, prepare_runtime  # noqa: E402
from ppssld.engine.checkpoint import Checkpointer  # noqa: E402
from ppssld.engine.evaluator import evaluate  # noqa: E402
from ppssld.utils.logger import setup_logging  # noqa: E402


def main() -> None:
    mode, config_path, out = sys.argv[1:4]
    setup_logging()
    config = load_config(config_path)
    rank = distributed.rank()
    if mode == "train":
        trainer = build_trainer(config)
        trainer.fit()
        state = {k: v.numpy() for k, v in trainer.model.state_dict().items()}
        np.savez(os.path.join(out, f"weights_rank{rank}.npz"), **state)
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
