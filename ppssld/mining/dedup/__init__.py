"""Near-duplicate removal of pool images against the evaluation (and training) images.

``near_duplicates``: signatures, perceptual-hash candidates, gating and the one-shot scan;
``signatures``: the same signatures for a stack of images at once (bit-identical); ``index``: the
faiss indexes the pipeline searches instead of an all-pairs scan; ``confirm``: ranking and the
pixel check; ``planted``: planted copies for tests and measurements.
"""
