"""Batched de-duplication signatures equal the per-image ones bit for bit (so every de-dup decision is unchanged):
Pillow's LANCZOS reproduced, grey decoding, the evaluation-list path and the pool-chunk path."""
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from ppssld.data.image import decode_file
from ppssld.data.transforms.core import decode_grey, decode_image
from ppssld.data.prepare import read_idx
from ppssld.data.transforms import build_transforms
from ppssld.mining.dedup import near_duplicates as dedup, signatures
from ppssld.mining.score import _load_chunk, error_message, reference_signatures

ROOT = "/usr/share/datasets/fashion-mnist"
FIELDS = ("hash", "thumb", "grey", "side")
OPS = [{"DecodeImage": {"to_rgb": True, "channel_first": False}}, {"ResizeImage": {"size": 32}},
       {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.286] * 3, "std": [0.353] * 3, "order": ""}},
       {"ToCHWImage": None}]


def _assert_equal_rows(arrays, per_image):
    ref = dedup.as_arrays(per_image)
    for field in FIELDS:
        got, want = arrays[field], getattr(ref, field)
        assert got.dtype == want.dtype and got.shape == want.shape, field
        differ = np.flatnonzero((got != want).reshape(len(got), -1).any(1))
        assert got.tobytes() == want.tobytes(), f"{field}: rows {differ}"


def test_pil_lanczos_and_dhash_equal_pillow_and_imagehash():
    rng = np.random.default_rng(0)
    for shape in [(28, 28), (8, 9), (9, 8), (1, 1), (37, 100), (200, 41)]:
        stack = rng.integers(0, 256, (200,) + shape, dtype=np.uint8)  # random pixels hit the rounding edges
        got = signatures.pil_lanczos(stack, 9, 8)
        want = np.stack([np.asarray(Image.fromarray(g).resize((9, 8), Image.LANCZOS)) for g in stack])
        assert np.array_equal(got, want), shape
        bits = signatures.dhash_bits(stack)
        assert np.array_equal(bits, np.stack([dedup.HASHES["dhash"](Image.fromarray(g)).hash.ravel() for g in stack]))


def test_signature_arrays_equal_per_image_signature():
    rng = np.random.default_rng(1)
    greys = []
    for shape in [(28, 28), (32, 32), (9, 8), (1, 1), (40, 23), (64, 100)]:
        noise = rng.integers(0, 256, (30,) + shape, dtype=np.uint8)
        greys += list(noise) + [cv2.GaussianBlur(g, (0, 0), 1.5) for g in noise[:10]]
        greys += [np.full(shape, v, np.uint8) for v in (0, 9, 255)]  # flat: the thumbnail norm's floor
    order = rng.permutation(len(greys))  # shapes interleaved: rows go back to their places
    greys = [greys[i] for i in order]
    _assert_equal_rows(signatures.signature_arrays(greys), [dedup.signature(g) for g in greys])
    phash = signatures.signature_arrays(greys[:20], "phash")  # other kinds: per-image hash, same arrays
    assert np.array_equal(phash["hash"], np.stack([dedup.signature(g, "phash").hash for g in greys[:20]]))
    with pytest.raises(ValueError, match="unknown hash"):
        signatures.signature_arrays(greys[:2], "nohash")


def _encode(img, ext, **params):
    ok, buf = cv2.imencode(ext, img, [int(v) for kv in params.items() for v in kv])
    assert ok
    return buf.tobytes()


def test_decode_grey_equals_rgb_to_grey_of_decode_image(tmp_path):
    rng = np.random.default_rng(2)
    grey8 = rng.integers(0, 256, (17, 23), dtype=np.uint8)
    colour = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    pal = tmp_path / "p.png"
    Image.fromarray(colour).convert("P").save(pal)
    la = tmp_path / "la.png"
    Image.fromarray(np.dstack([grey8, grey8[::-1]]), "LA").save(la)
    trns = tmp_path / "trns.png"  # an 8-bit grey PNG with a transparent grey value: read as grey
    Image.fromarray(grey8).save(trns, transparency=int(grey8[0, 0]))
    cases = {"grey png": _encode(grey8, ".png"), "colour png": _encode(colour, ".png"),
             "grey png with tRNS": trns.read_bytes(),
             "16-bit grey png": _encode(grey8.astype(np.uint16) * 257, ".png"),
             "grey jpeg": _encode(grey8, ".jpg"), "colour jpeg": _encode(colour, ".jpg"),
             "palette png": pal.read_bytes(), "grey+alpha png": la.read_bytes()}
    for name, data in cases.items():
        for backend in ("cv2", "pil"):
            want = cv2.cvtColor(decode_image(data, backend), cv2.COLOR_RGB2GRAY)
            assert np.array_equal(decode_grey(data, backend), want), (name, backend)


@pytest.mark.fashion_mnist  # skips without the data set; fails in CI (tests/conftest.py)
def test_reference_and_pool_paths_equal_per_image_on_fashion_mnist(tmp_path):
    images = read_idx(f"{ROOT}/t10k-images-idx3-ubyte.gz")[:300]
    paths = []
    for i, img in enumerate(images):
        name = f"{i:04d}.png" if i % 10 else f"{i:04d}.jpg"  # PNG as prepare_data writes them, a few JPEGs
        cv2.imwrite(str(tmp_path / name), img)
        paths.append(name)
    cv2.imwrite(str(tmp_path / "colour.png"), np.dstack([images[0], images[1], images[2]]))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    paths[5:5] = ["colour.png", "empty.png", "missing.png", "junk.png"]
    per_image, errors = [], []
    for p in paths:
        try:
            per_image.append(dedup.signature(decode_file(os.path.join(tmp_path, p))))
        except (ValueError, OSError) as exc:  # DataError is a ValueError
            errors.append((p, error_message(exc)))
    arrays, bad = reference_signatures(paths, str(tmp_path))
    assert bad == errors and [p for p, _e in bad] == ["empty.png", "missing.png", "junk.png"]
    assert arrays["ok"].tolist() == [p not in ("empty.png", "missing.png", "junk.png") for p in paths]
    _assert_equal_rows({k: v[arrays["ok"]] for k, v in arrays.items()}, per_image)
    assert not arrays["hash"][~arrays["ok"]].any() and not arrays["grey"][~arrays["ok"]].any()
    # the pool chunk path: decoded with the chain's decoder, hashed as one stack
    transform = build_transforms(OPS)
    loaded, sigs = _load_chunk(paths, str(tmp_path), transform, dedup.DEFAULT_HASH, dedup.DEFAULT_HASH_SIZE)
    assert [item[3] for item in loaded if item[3]] == [e for _p, e in errors]
    _assert_equal_rows(sigs, [dedup.signature(decode_file(os.path.join(tmp_path, p), transform))
                              for p, item in zip(paths, loaded) if item[0] is not None])
