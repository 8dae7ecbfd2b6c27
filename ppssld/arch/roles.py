"""Which model plays which role: the student's output in a dict of outputs, and the infer model.

One rule each, used by the losses, the metrics, the model builder, ``DistillationModel`` and export:

* **The student's output** (:func:`student_output_name`): in a dict of model outputs, the entry
  ``logits`` (a backbone with ``return_patterns``), else ``Student`` (PaddleClas's name for the
  trained model of a ``DistillationModel``), else the only entry; with several other entries there
  is no answer (None) and the caller asks for ``model_names`` / ``model_key``.
* **The infer model** (:func:`infer_model`): the model evaluation and export use: ``infer_model_name``
  when given, else the last model not frozen (PaddleClas's convention: the student follows the
  teacher in ``models``), else, when every model is frozen, the last model.
"""
from typing import Any, Dict, Optional, Sequence

STUDENT = "Student"
LOGITS = "logits"


def student_output_name(outputs: Dict[str, Any]) -> Optional[str]:
    """The key of the student's entry in ``outputs`` (see the module docstring), or None."""
    for candidate in (LOGITS, STUDENT):
        if candidate in outputs:
            return candidate
    if len(outputs) == 1:
        return next(iter(outputs))
    return None


def infer_model(names: Sequence[str], frozen: Sequence[bool], requested: Optional[str] = None) -> str:
    """The infer model among ``names`` (``frozen[i]``: whether ``names[i]`` is frozen)."""
    if requested:
        return requested
    trainable = [name for name, is_frozen in zip(names, frozen) if not is_frozen]
    return trainable[-1] if trainable else names[-1]
