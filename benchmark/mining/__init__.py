"""Mining benchmarks: the perceptual hash choice, de-duplication and selection at scale, mining throughput
against bare teacher inference. Results in ``benchmark/results/mining/``."""
