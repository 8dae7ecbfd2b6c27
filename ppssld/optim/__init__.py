"""Floor 2: optimizers and LR schedules. Importing this package registers them.

The engine calls ``lr_scheduler.step()`` once after every ``optimizer.step()``.
"""
from ppssld.optim import optimizers
from ppssld.optim import schedulers
from ppssld.optim import decay_schedulers
from ppssld.optim.builder import build_optimizer, named_trainable, validate_optimizer_config
from ppssld.optim.optimizers import build_regularizer
from ppssld.optim.schedulers import Constant, Cosine, Piecewise, WarmupSchedule, build_lr_scheduler

__all__ = ["optimizers", "schedulers", "decay_schedulers", "build_optimizer", "named_trainable", "validate_optimizer_config",
           "build_regularizer", "Constant", "Cosine", "Piecewise", "WarmupSchedule", "build_lr_scheduler"]
