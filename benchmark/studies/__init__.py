"""Studies behind a decision: the loss study, the teacher choice, the first epoch's low evaluation, the
soft-label cache's top-K fidelity, post-training int8. Results (and the main job's) in
``benchmark/results/studies/``."""
