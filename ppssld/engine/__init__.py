"""Floor 3: trainer, evaluator, checkpointer, distributed helpers, builders."""
