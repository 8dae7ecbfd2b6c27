"""Batch operators applied once per batch before any model sees it (Mixup, Cutmix, OpSampler)."""
