"""The SSLD main job: prepare -> teacher -> mine -> (CE baseline) -> distill -> fine-tune -> export.

``config`` reads the pipeline YAML, ``stages`` lists the stages (one ``Stage`` record each),
``runner`` runs them with fingerprints; ``data_stage``, ``stage_cache``, ``mining_report``,
``summary`` and ``speed`` are the stages' helpers.
"""
from ppssld.recipes.ssld.config import load_pipeline_config
from ppssld.recipes.ssld.runner import Pipeline

__all__ = ["Pipeline", "load_pipeline_config"]
