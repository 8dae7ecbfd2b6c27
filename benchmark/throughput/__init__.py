"""Speed benchmarks: training (student, distillation, soft-label cache), host syncs, the data loader, the
exported student, the teacher engine, the cache against PaddleClas, the main job online vs cached, MKL's
kernels on an AMD CPU.
Results in ``benchmark/results/throughput/``."""
