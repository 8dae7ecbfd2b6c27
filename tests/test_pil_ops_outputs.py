"""The PIL augmentations give the same bytes as before their ops moved into one table (``pil_ops``).

``tests/fixtures/pil_ops_outputs.json`` was recorded by running this file as a script
(``python tests/test_pil_ops_outputs.py --record``) on the code before the move (commit "tests: record the
PIL augmentation outputs ..."): per op of each family (AutoAugment/RandAugment, RandAugmentV3, timm), one
BLAKE2b digest over every output of that op at several strengths, signs, resamplings, fills and three
images; per whole augmenter, one digest over 20 seeded draws on each image. A different byte anywhere
changes the digest of its group, and the failure names the group. (A Pillow release that changes a
resampling kernel would change these too: re-record then, on code known to be right.)
"""
import hashlib
import json
import os
import random
import sys
from typing import Callable, Dict, Iterator, List, Tuple

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from ppssld.data.transforms import autoaugment, color_jitter, pil_ops, randaugment_v3, timm_augment  # noqa: E402
from ppssld.data.transforms.basic import AutoAugment, RandAugment  # noqa: E402

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "pil_ops_outputs.json")
SEEDS = 20


def images() -> List[np.ndarray]:
    """Three uint8 RGB images: noise (odd, non-square size), a smooth two-way ramp, a low-contrast patch."""
    noise = np.random.RandomState(0).randint(0, 256, (19, 23, 3)).astype(np.uint8)
    y, x = np.mgrid[0:24, 0:24]
    ramp = np.stack([x * 10, y * 10, (x + y) * 5], axis=-1).clip(0, 255).astype(np.uint8)
    low = np.random.RandomState(1).randint(100, 141, (16, 20, 3)).astype(np.uint8)
    return [noise, ramp, low]


def _digest(arrays: Iterator[np.ndarray]) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    for array in arrays:
        array = np.asarray(array)
        hasher.update(f"{array.shape}{array.dtype}".encode())
        hasher.update(np.ascontiguousarray(array).tobytes())
    return hasher.hexdigest()


def _auto_op(op: str) -> Iterator[np.ndarray]:
    for img in images():
        for fraction in (0.0, 0.37, 1.0):
            for seed in (0, 1):
                for fill in ((128, 128, 128), (0, 10, 250)):
                    pil = Image.fromarray(img)
                    value = autoaugment.strength(op, fraction)
                    yield np.asarray(autoaugment.apply_op(pil, op, value, random.Random(seed), fill))


def _v3_op(name: str) -> Iterator[np.ndarray]:
    for img in images():
        for magnitude in (0.0, 3.0, 7.5, 10.0):
            for sign in (1, -1):
                for resample in (Image.BICUBIC, Image.BILINEAR):
                    pil = Image.fromarray(img)
                    level = randaugment_v3.levels(magnitude)[name]
                    yield np.asarray(randaugment_v3.apply_v3(pil, name, level, sign, resample, (5, 128, 200)))


def _timm_op(name: str) -> Iterator[np.ndarray]:
    for img in images():
        for magnitude in (0.0, 4.5, 9.0, 10.0):
            for seed in (0, 1):
                for resample in (Image.BILINEAR, Image.BICUBIC):
                    pil = Image.fromarray(img)
                    arg = timm_augment.LEVELS[name](magnitude, random.Random(seed), pil)
                    yield np.asarray(timm_augment.apply_timm_op(pil, name, arg, (124, 116, 104), resample))


AUGMENTERS: Dict[str, Callable[[], Callable]] = {
    "AutoAugment": lambda: AutoAugment(),
    "AutoAugment-fill": lambda: AutoAugment(fillcolor=(0, 64, 255)),
    "RandAugment-n2-m5": lambda: RandAugment(2, 5),
    "RandAugment-n3-m9": lambda: RandAugment(3, 9, fillcolor=7),
    "RandAugmentV3-n2-m3": lambda: randaugment_v3.RandAugmentV3(2, 3),
    "RandAugmentV3-n3-m7-bilinear": lambda: randaugment_v3.RandAugmentV3(3, 7, 128, "bilinear"),
    "Timm-rand-m9-mstd0.5-inc1": lambda: timm_augment.TimmAutoAugment("rand-m9-mstd0.5-inc1"),
    "Timm-rand-m9-mstd0.5": lambda: timm_augment.TimmAutoAugment("rand-m9-mstd0.5"),
    "Timm-rand-m7-n3-w0-random": lambda: timm_augment.TimmAutoAugment("rand-m7-n3-w0", interpolation="random"),
    "Timm-original-mstd0.5": lambda: timm_augment.TimmAutoAugment("original-mstd0.5", interpolation="bilinear"),
    "Timm-rand-m9-inc1-prob0.5": lambda: timm_augment.TimmAutoAugment("rand-m9-inc1", prob=0.5),
}


def _augmenter(make: Callable[[], Callable]) -> Iterator[np.ndarray]:
    op = make()
    for img in images():
        for seed in range(SEEDS):
            yield np.asarray(op(img.copy(), random.Random(seed)))


def groups() -> Iterator[Tuple[str, Callable[[], Iterator[np.ndarray]]]]:
    """Every recorded group: its name and the outputs it digests."""
    for op in autoaugment.RANGES:
        yield f"autoaugment.apply_op:{op}", lambda op=op: _auto_op(op)
    for name in randaugment_v3.OPS:
        yield f"randaugment_v3.apply_v3:{name}", lambda name=name: _v3_op(name)
    for name in timm_augment.LEVELS:
        yield f"timm_augment.apply_timm_op:{name}", lambda name=name: _timm_op(name)
    for name, make in AUGMENTERS.items():
        yield f"augmenter:{name}", lambda make=make: _augmenter(make)


def digests() -> Dict[str, str]:
    """The digest of every group, computed by the code under test."""
    return {name: _digest(outputs()) for name, outputs in groups()}


def test_every_pil_op_and_augmenter_gives_the_recorded_bytes():
    with open(FIXTURE, "r", encoding="utf-8") as handle:
        recorded = json.load(handle)
    now = digests()
    assert sorted(now) == sorted(recorded), "the op sets changed: " + str(sorted(set(now) ^ set(recorded)))
    changed = [name for name in recorded if now[name] != recorded[name]]
    assert not changed, f"outputs differ from the recorded ones in: {changed}"


def test_every_family_draws_its_ops_from_the_one_table():
    used = {op for op, _arg, _resample in autoaugment.TABLE.values()} | {op for op, _arg in
                                                                          randaugment_v3.TABLE.values()}
    used |= set(timm_augment.TABLE.values()) | set(color_jitter.ENHANCE_OPS.values())
    assert used == set(pil_ops.OPS)  # every family name maps into the table, and no entry is unused
    assert set(autoaugment.TABLE) == set(autoaugment.RANGES) and set(randaugment_v3.TABLE) == set(randaugment_v3.OPS)
    assert {n.replace("Increasing", "").replace("Original", "") for n in timm_augment.LEVELS} == set(timm_augment.TABLE)
    with pytest.raises(KeyError, match="unknown PIL op 'spin'"):
        pil_ops.apply("spin", Image.fromarray(images()[0]))


def test_the_digest_sees_one_changed_byte():
    outputs = list(_augmenter(AUGMENTERS["RandAugment-n2-m5"]))
    before = _digest(iter(outputs))
    outputs[7] = outputs[7].copy()
    outputs[7].flat[3] ^= 1
    assert _digest(iter(outputs)) != before


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_pil_ops_outputs.py --record  (only on code known to be right)")
    with open(FIXTURE, "w", encoding="utf-8") as handle:
        json.dump(digests(), handle, indent=1, sort_keys=True)
        handle.write("\n")
    print(f"recorded {FIXTURE}")
