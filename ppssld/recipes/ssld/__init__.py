"""The SSLD main job: prepare -> teacher -> mine -> (CE baseline) -> distill -> fine-tune -> export."""
from ppssld.recipes.ssld.runner import Pipeline, load_pipeline_config

__all__ = ["Pipeline", "load_pipeline_config"]
