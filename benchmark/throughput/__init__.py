"""Speed benchmarks: training (student, distillation, soft-label cache), host syncs, the data loader, the
exported student, the teacher engine, the cache against PaddleClas, the main job online vs cached.
Results in ``benchmark/results/throughput/``."""
