"""What a soft-label cache can stand in for, and what it refuses (with the reason).

The cache stores the frozen teacher's softmax per (image, view). It can replace the teacher only
where training would compute exactly that:

* the teacher in eval mode (``Arch.teacher_bn_mode: eval``): with ``train`` its BatchNorm uses
  batch statistics, so its output depends on the other images of the batch, which are
  reshuffled every epoch;
* no batch operators (``batch_transform_ops``: Mixup, Cutmix, ...): they change the teacher's input
  after the dataset (mixing the cached distributions would only approximate the teacher's output on
  a mixed image);
* ``ImageNetDataset`` (labels and sizes from the list; not the multi-scale, multi-label or
  custom-label datasets whose operators change the image or the target);
* losses that read the teacher only through ``softmax(logits / T)``: the cache hands them
  ``log p``, which has the same softmax at every temperature (softmax is shift-invariant).
  Losses on raw logits or features (distance, RKD, SKD, feature losses) are refused.
"""
from typing import Any, Dict, Iterable, Sequence, Set

from ppssld.cache.manifest import teacher_members
from ppssld.utils.config import get
from ppssld.utils.errors import ConfigError

# losses whose teacher term is a function of softmax(teacher / T) only
SOFTMAX_LOSSES = {"JSDivLoss", "SymmetricKLLoss", "KLDivLoss", "DistillationKLDivLoss", "DistillationDMLLoss",
                  "DistillationCELoss", "SoftTargetCELoss", "DistillationDKDLoss", "DistillationWSLLoss",
                  "DistillationDISTLoss"}
DATASETS = ("ImageNetDataset",)


def check_cacheable(config: Dict[str, Any]) -> None:
    """Refuse configs whose teacher output a cache cannot reproduce (generation and training).

    Raises:
        ConfigError: naming the key and why.
    """
    teacher_members(config)
    mode = get(config, "Arch.teacher_bn_mode", "eval")
    if mode != "eval":
        raise ConfigError(f"Arch.teacher_bn_mode={mode}: a soft-label cache needs the teacher in eval mode; with "
                          f"'train' its BatchNorm uses batch statistics, so its output depends on which images share "
                          f"the batch (reshuffled every epoch) and cannot be stored per image. Set it to eval or "
                          f"train online (remove Global.soft_label_cache)")
    if get(config, "DataLoader.Train.dataset.batch_transform_ops"):
        raise ConfigError("DataLoader.Train.dataset.batch_transform_ops: batch operators (Mixup, Cutmix, ...) "
                          "change the teacher's input after the dataset, so no stored per-image output is the "
                          "teacher's output on the mixed image. Remove them or train online")
    if get(config, "Global.train_mode") == "progressive":
        raise ConfigError("Global.train_mode: progressive changes the training image size and RandAugment magnitude "
                          "per stage, so the teacher's output on a view differs between stages and no stored "
                          "per-image output fits every stage. Train online (remove Global.soft_label_cache)")
    name = get(config, "DataLoader.Train.dataset.name")
    if name not in DATASETS:
        raise ConfigError(f"DataLoader.Train.dataset.name={name}: a soft-label cache supports {', '.join(DATASETS)} "
                          f"(single-label lists; this dataset changes images or targets per sample beyond the "
                          f"transform list)")


def _names(loss: Any) -> Set[str]:
    names: Set[str] = set()
    for pair in getattr(loss, "model_name_pairs", None) or []:
        names.update(pair)
    for attr in ("model_names", "model_name"):
        value = getattr(loss, attr, None)
        if isinstance(value, str):
            names.add(value)
        elif isinstance(value, (list, tuple)):
            names.update(v for v in value if isinstance(v, str))
    return names


# what stands for the teacher: (what it is, what it lacks, what else to do, what it holds)
STANDS_IN = {"cache": ("with Global.soft_label_cache the teacher is its stored softmax", "the cache does not hold",
                       " or train online", "the cache holds only the teacher's softmax"),
             "ensemble": ("an Arch.ensemble's output is the log of its members' mean probability",
                          "an ensemble does not have", "", "an ensemble gives only its mean softmax")}


def check_losses(losses: Iterable[Any], teacher: str, where: str = "Loss.Train", source: str = "cache",
                 absent: Sequence[str] = ()) -> None:
    """Refuse losses that read the teacher other than through its softmax (``source``: a ``cache`` or an
    ``ensemble`` stands for the teacher; for an ensemble only the losses naming it are judged), and, with a cache
    of an ensemble, losses that name a member (``absent``: not built, only the ensemble is cached).

    Raises:
        ConfigError: naming the loss and why.
    """
    what, lacks, instead, holds = STANDS_IN[source]
    for i, loss in enumerate(losses):
        name = getattr(loss, "config_name", type(loss).__name__)
        named = _names(loss) & set(absent)
        if named:
            raise ConfigError(f"{where}[{i}].{name} names {sorted(named)}, members of the ensemble {teacher}: with "
                              f"Global.soft_label_cache only the ensemble's output is stored and its members are not "
                              f"built. Name {teacher} instead, or train online")
        uses = teacher in _names(loss)
        known = hasattr(loss, "model_name_pairs") or hasattr(loss, "model_names")
        if not uses and (known or source == "ensemble"):
            continue
        if name not in SOFTMAX_LOSSES:
            raise ConfigError(f"{where}[{i}].{name}: {what}; this loss reads the teacher's raw logits or "
                              f"features, which {lacks}. Use a softmax-based loss "
                              f"({', '.join(sorted(SOFTMAX_LOSSES))}){instead}")
        key = getattr(loss, "key", None)
        act = getattr(loss, "act", None)
        if key not in (None, "logits") or (name == "DistillationDistanceLoss" and act != "softmax"):
            raise ConfigError(f"{where}[{i}].{name}: key {key!r} is not the teacher's logits; {holds}")
