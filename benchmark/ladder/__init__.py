"""The SSLD ablation ladder in miniature (Fashion-MNIST), run from the repository root:

    python -m benchmark.ladder converged --plan   # the converged ladder (docs/ladder.md): its plan and cost
    python -m benchmark.ladder converged          # ... and the run (resumable; hours)
    python -m benchmark.ladder [options]          # the classic ladder: steps 0-6 at fixed budgets
    python -m benchmark.ladder twin --work DIR    # online twins of two cached classic arms

Modules: ``classic`` (the classic ladder's steps and command line), ``budget`` (its plan and cost model),
``runs`` (data, configs, soft-label caches, resumable runs: shared by both ladders), ``render`` (classic
ladder.md / .png), ``twin`` (cached vs online wall time); the converged ladder: ``plateau`` (the plateau
rule and the doubling search), ``arms`` (its arms, plan and cost model), ``converged`` (execution),
``converged_render`` (ladder.md / .png). Results go to ``benchmark/results/ladder/``.
"""
