"""``use_sync_bn`` (``Global`` or ``Arch``): BatchNorm -> SyncBatchNorm when training on several GPUs."""
import logging
from typing import Any, Dict

import paddle

from ppssld.utils.config import get
from ppssld.engine import distributed

logger = logging.getLogger(__name__)


def wants_sync_bn(config: Dict[str, Any]) -> bool:
    """``Global.use_sync_bn``, ``Arch.use_sync_bn`` or one of ``Arch.models[i].<Name>.use_sync_bn``."""
    if get(config, "Global.use_sync_bn", False) or get(config, "Arch.use_sync_bn", False):
        return True
    for entry in get(config, "Arch.models", []) or []:
        if isinstance(entry, dict):
            for sub in entry.values():
                if isinstance(sub, dict) and sub.get("use_sync_bn"):
                    return True
    return False


_warned_sync = []


def apply_sync_bn(config: Dict[str, Any], model: paddle.nn.Layer) -> paddle.nn.Layer:
    """Convert BatchNorm layers to ``SyncBatchNorm`` when asked for and training on several GPUs.

    On CPU (SyncBatchNorm is a GPU kernel) or in a single process (where it equals BatchNorm) the
    model is unchanged and a warning says so, once.
    """
    if not wants_sync_bn(config):
        return model
    on_gpu = paddle.device.is_compiled_with_cuda() and "gpu" in paddle.device.get_device()
    if on_gpu and distributed.world_size() > 1:
        logger.info("use_sync_bn: BatchNorm layers converted to SyncBatchNorm (statistics over all %d GPUs)",
                    distributed.world_size())
        return paddle.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if not _warned_sync:
        _warned_sync.append(True)
        if on_gpu:
            logger.warning("use_sync_bn: one training process, so BatchNorm already sees the whole batch; "
                           "SyncBatchNorm is not needed and is not used")
        else:
            logger.warning("use_sync_bn: SyncBatchNorm needs GPUs; training on %s keeps plain BatchNorm, with "
                           "statistics per process", paddle.device.get_device())
    return model
