"""The main job's stages, one ``Stage`` record each, in the order they run.

A stage's runner is the ``Pipeline`` method named ``_<name>`` (checked by ``tests/test_pipeline.py``);
its fingerprint holds the digests of the stages it ``reads``. An ``optional`` stage runs only when
its section is present (and not ``enabled: false``); the others run unless ``enabled: false``.
"""
from dataclasses import dataclass
from typing import Any, Dict, Tuple

LAYOUT = 2  # version of the data stage's output layout (2: one image copy for student and teacher lists)


@dataclass(frozen=True)
class Stage:
    """One stage of the main job.

    Attributes:
        name: the stage's name, its section in the pipeline YAML and its folder under ``output_dir``.
        reads: the stages whose outputs it reads (their digests are part of its fingerprint).
        optional: absent section means the stage is off (the CE baseline, the fine-tune).
    """

    name: str
    reads: Tuple[str, ...]
    optional: bool = False

    def enabled(self, cfg: Dict[str, Any]) -> bool:
        """Whether the pipeline config ``cfg`` runs this stage."""
        section = cfg.get(self.name)
        if self.optional and not section:
            return False
        return bool((section or {}).get("enabled", True))


# the baseline runs after mining: with baseline.match_budget (default) it sees as many images as the SSLD
# student (distillation on labeled + mined images, then the fine-tune), which depends on the mined count
STAGES: Tuple[Stage, ...] = (
    Stage("data", ()),
    Stage("teacher", ("data",)),
    Stage("mine", ("data", "teacher")),
    Stage("baseline", ("data", "mine"), optional=True),
    Stage("distill", ("data", "teacher", "mine")),
    Stage("finetune", ("data", "teacher", "distill"), optional=True),
    Stage("export", ("data", "teacher", "distill", "finetune")),
)
BY_NAME: Dict[str, Stage] = {stage.name: stage for stage in STAGES}
