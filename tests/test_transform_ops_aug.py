"""TimmAutoAugment, ColorJitter, RandomErasing, Cutout, HideAndSeek, GridMask: references and seeded properties."""
import random

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from ppssld.data.transforms.color_jitter import ColorJitter, shift_hue
from ppssld.data.transforms.timm_augment import LEVELS, TimmAutoAugment, TimmOp
from ppssld.data.transforms import CHW, HWC, build_transforms
from ppssld.utils.errors import ConfigError


def _img(h=32, w=40, seed=0):
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


def _built(name, params, layout=HWC):
    ops = [{"DecodeImage": None}, {"NormalizeImage": {"order": ""}}, {name: params}]
    if layout == CHW:
        ops.insert(2, {"ToCHWImage": None})
    return build_transforms(ops).ops[-1][1]


# ---------------- TimmAutoAugment

def test_timm_config_string_parsing_and_errors():
    op = TimmAutoAugment("rand-m9-mstd0.5-inc1", img_size=224, mean=[0.5, 0.5, 0.5])
    assert op.policy.num_layers == 2 and len(op.policy.ops) == 15
    first = op.policy.ops[4]
    assert (first.name, first.magnitude, first.std, first.prob, first.fill) == ("PosterizeIncreasing", 9, 0.5, 0.5,
                                                                               (128, 128, 128))
    op = TimmAutoAugment("rand-m8-inc1-mstd1.0 ")  # order-free sections, trailing space (PaddleClas configs)
    assert op.policy.ops[0].magnitude == 8 and op.policy.ops[0].std == 1.0
    assert TimmAutoAugment("rand-n3-m5").policy.ops[5].name == "Solarize"
    assert TimmAutoAugment("rand-m9-w0").policy.weights is not None
    assert len(TimmAutoAugment("original-mstd0.5").policy.policy) == 25
    with pytest.raises(ConfigError, match="section 'x3' is not one of m<number>"):
        TimmAutoAugment("rand-m9-x3")
    with pytest.raises(ConfigError, match="AugMix and the v0 policies are not implemented"):
        TimmAutoAugment("augmix-m5-w4")
    with pytest.raises(ConfigError, match=r"TimmAutoAugment: interpolation must be one of"):
        build_transforms([{"TimmAutoAugment": {"interpolation": "cubicle"}}])
    img = _img()
    assert TimmAutoAugment(None)(img, random.Random(0)) is img


@pytest.mark.parametrize("name,magnitude,reference", [
    ("PosterizeIncreasing", 9, lambda im: ImageOps.posterize(im, 4 - int(0.9 * 4))),
    ("SolarizeIncreasing", 7, lambda im: ImageOps.solarize(im, 256 - int(0.7 * 256))),
    ("Solarize", 3, lambda im: ImageOps.solarize(im, int(0.3 * 256))),
    ("SolarizeAdd", 5, lambda im: im.point([min(255, i + 55) if i < 128 else i for i in range(256)] * 3)),
    ("Color", 5, lambda im: ImageEnhance.Color(im).enhance(0.5 * 1.8 + 0.1)),
    ("Equalize", 5, ImageOps.equalize),
    ("Invert", 5, ImageOps.invert),
])
def test_timm_deterministic_ops_equal_pil_reference(name, magnitude, reference):
    pil = Image.fromarray(_img())
    got = TimmOp(name, 1.0, magnitude, 0.0, (0, 0, 0), (Image.BICUBIC,))(pil, random.Random(0))
    assert np.array_equal(np.asarray(got), np.asarray(reference(pil)))


@pytest.mark.parametrize("name,amount", [("Rotate", 27.0), ("ShearX", 0.27), ("TranslateXRel", 0.405),
                                         ("BrightnessIncreasing", 0.81)])
def test_timm_signed_ops_use_the_level_with_a_random_sign(name, amount):
    pil = Image.fromarray(_img())
    fill = (124, 116, 104)
    for seed in range(6):
        arg = LEVELS[name](9, random.Random(seed), pil)
        size = pil.size[0] if name == "TranslateXRel" else 1.0
        offset = 1.0 if name == "BrightnessIncreasing" else 0.0
        assert abs(abs(arg - offset) - amount * size) < 1e-6
        got = TimmOp(name, 1.0, 9, 0.0, fill, (Image.BICUBIC,))(pil, random.Random(seed))
        if name == "Rotate":
            ref = pil.rotate(arg, resample=Image.BICUBIC, fillcolor=fill)
        elif name == "ShearX":
            ref = pil.transform(pil.size, Image.AFFINE, (1, arg, 0, 0, 1, 0), resample=Image.BICUBIC, fillcolor=fill)
        elif name == "TranslateXRel":
            ref = pil.transform(pil.size, Image.AFFINE, (1, 0, arg, 0, 1, 0), resample=Image.BICUBIC, fillcolor=fill)
        else:
            ref = ImageEnhance.Brightness(pil).enhance(arg)
        assert np.array_equal(np.asarray(got), np.asarray(ref))


def test_timm_rand_augment_is_seeded_and_prob_half():
    op = TimmAutoAugment("rand-m9-mstd0.5-inc1")
    img = _img()
    a, b = op(img, random.Random(5)), op(img, random.Random(5))
    assert np.array_equal(a, b)
    unchanged = sum(np.array_equal(op(img, random.Random(s)), img) for s in range(300))
    # two ops, each applied with probability 1/2: about a quarter of images untouched (a few applied ops are no-ops)
    assert 0.15 < unchanged / 300 < 0.4, unchanged


def test_timm_magnitude_noise_is_clipped():
    op = TimmOp("Rotate", 1.0, 9.5, 5.0, (0, 0, 0), (Image.BILINEAR,))
    pil = Image.fromarray(_img())
    seen = []
    for seed in range(50):
        rng = random.Random(seed)
        m = min(10.0, max(0.0, rng.gauss(9.5, 5.0)))
        seen.append(m)
        ref = pil.rotate(LEVELS["Rotate"](m, rng, pil), resample=Image.BILINEAR, fillcolor=(0, 0, 0))
        assert np.array_equal(np.asarray(op(pil, random.Random(seed))), np.asarray(ref))
    assert max(seen) == 10.0 and min(seen) < 9.5


# ---------------- ColorJitter

def test_color_jitter_brightness_only_equals_pil_enhance_at_the_drawn_factor():
    op = ColorJitter(brightness=0.4)
    img = _img()
    factors = []
    for seed in range(20):
        plan = op.plan(random.Random(seed))
        assert len(plan) == 1 and plan[0][0] == "brightness" and 0.6 <= plan[0][1] <= 1.4
        factors.append(plan[0][1])
        ref = np.asarray(ImageEnhance.Brightness(Image.fromarray(img)).enhance(plan[0][1]))
        assert np.array_equal(op(img, random.Random(seed)), ref)
    assert np.std(factors) > 0.1


def test_color_jitter_all_four_random_order_and_prob():
    op = ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    orders = {tuple(k for k, _ in op.plan(random.Random(s))) for s in range(60)}
    assert len(orders) > 6 and all(sorted(o) == ["brightness", "contrast", "hue", "saturation"] for o in orders)
    img = _img()
    plan = op.plan(random.Random(3))
    ref = Image.fromarray(img)
    for kind, value in plan:
        ref = shift_hue(ref, value) if kind == "hue" else {
            "brightness": ImageEnhance.Brightness, "contrast": ImageEnhance.Contrast,
            "saturation": ImageEnhance.Color}[kind](ref).enhance(value)
    assert np.array_equal(op(img, random.Random(3)), np.asarray(ref))
    never = ColorJitter(brightness=0.4, prob=0.0)
    assert never(img, random.Random(0)) is img
    with pytest.raises(ConfigError, match="hue must lie in"):
        ColorJitter(hue=0.7)


def test_hue_shift_rotates_pure_colours():
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    out = np.asarray(shift_hue(Image.fromarray(red), 1 / 3))
    assert out[0, 0, 1] > 240 and out[0, 0, 0] < 15  # red -> green


# ---------------- RandomErasing

@pytest.mark.parametrize("layout", [HWC, CHW])
def test_random_erasing_fills_one_rectangle_of_bounded_area(layout):
    op = _built("RandomErasing", {"EPSILON": 1.0, "sl": 0.05, "sh": 0.3, "r1": 0.5, "mean": [7.0, 8.0, 9.0]},
                layout)
    base = np.ones((40, 48, 3), np.float32) * 0.25
    if layout == CHW:
        base = base.transpose(2, 0, 1).copy()
    for seed in range(30):
        out = op(base, random.Random(seed))
        hwc = out.transpose(1, 2, 0) if layout == CHW else out
        changed = np.argwhere((hwc != 0.25).any(axis=2))
        (y0, x0), (y1, x1) = changed.min(0), changed.max(0)
        h, w = y1 - y0 + 1, x1 - x0 + 1
        assert len(changed) == h * w  # one full rectangle
        assert np.allclose(hwc[y0:y1 + 1, x0:x1 + 1], [7.0, 8.0, 9.0])
        area = h * w / (40 * 48)
        assert 0.05 * 0.8 <= area <= 0.3 * 1.2, area
        assert 0.5 * 0.7 <= h / w <= 2.0 * 1.4
    assert np.all(base == 0.25)  # the input is not modified


def test_random_erasing_probability_modes_and_determinism():
    op = _built("RandomErasing", {"EPSILON": 0.3, "mode": "pixel"})
    img = np.zeros((32, 32, 3), np.float32)
    erased = [not np.array_equal(op(img, random.Random(s)), img) for s in range(300)]
    assert abs(np.mean(erased) - 0.3) < 0.08
    a, b = op(img, random.Random(4)), op(img, random.Random(4))
    assert np.array_equal(a, b)
    seeds = [s for s in range(300) if erased[s]]
    region = op(img, random.Random(seeds[0]))
    assert abs(region[region != 0].std() - 1.0) < 0.3  # N(0, 1) per pixel
    with pytest.raises(ConfigError, match="sl <= sh"):
        _built("RandomErasing", {"sl": 0.5, "sh": 0.1})


# ---------------- Cutout / HideAndSeek / GridMask

def test_cutout_box_matches_reference_draws():
    op = _built("Cutout", {"n_holes": 2, "length": 10, "fill_value": [1.0, 2.0, 3.0]})
    img = np.zeros((30, 36, 3), np.float32)
    out = op(img, random.Random(9))
    ref, rng = img.copy(), random.Random(9)
    for _ in range(2):
        y, x = rng.randrange(30), rng.randrange(36)
        ref[max(0, y - 5):min(30, y + 5), max(0, x - 5):min(36, x + 5)] = [1.0, 2.0, 3.0]
    assert np.array_equal(out, ref)
    random_fill = _built("Cutout", {"length": 8, "fill_value": "none"})
    out = random_fill(np.zeros((20, 20, 3), np.uint8), random.Random(1))
    assert out.any() and out.dtype == np.uint8


def test_hide_and_seek_hides_whole_cells_about_half_the_time():
    op = _built("HideAndSeek", {"grid_sizes": [8], "hide_prob": 0.5}, CHW)
    img = np.ones((3, 32, 32), np.float32)
    fractions = []
    for seed in range(40):
        out = op(img, random.Random(seed))
        cells = out[0].reshape(4, 8, 4, 8)
        per_cell = cells.mean(axis=(1, 3))
        assert set(np.unique(per_cell)) <= {0.0, 1.0}  # every cell fully hidden or fully kept
        assert np.array_equal(out[0], out[2])
        fractions.append(1 - per_cell.mean())
    assert abs(np.mean(fractions) - 0.5) < 0.06
    assert np.array_equal(_built("HideAndSeek", {"grid_sizes": [0]})(img[0][..., None], random.Random(0)),
                          img[0][..., None])


def test_grid_mask_period_stripes_and_mode():
    op = _built("GridMask", {"d1": 10, "d2": 11, "rotate": 1, "ratio": 0.3, "mode": 0})
    img = np.ones((40, 40, 3), np.float32)
    out = op(img, random.Random(2))[..., 0]
    # d = 10, stripe width int(10 * 0.3 + 0.5) = 3 along both axes: kept fraction (7/10)^2
    assert abs(out.mean() - 0.49) < 1e-6
    assert np.array_equal(out[:, :30], out[:, 10:40]) and np.array_equal(out[:30], out[10:40])
    inverted = _built("GridMask", {"d1": 10, "d2": 11, "ratio": 0.3, "mode": 1})(img, random.Random(2))[..., 0]
    assert np.array_equal(inverted, 1 - out)
    never = _built("GridMask", {"d1": 10, "d2": 11, "prob": 0.0})
    assert np.array_equal(never(img, random.Random(0)), img)


def test_new_ops_order_rules():
    with pytest.raises(ConfigError, match="TimmAutoAugment works on uint8 images: put it before NormalizeImage"):
        build_transforms([{"DecodeImage": None}, {"NormalizeImage": {"order": ""}}, {"TimmAutoAugment": None}])
    with pytest.raises(ConfigError, match=r"'RandomErasing' at transform_ops\[1\] has no parameter 'epsilon'. Did you mean 'EPSILON'"):
        build_transforms([{"DecodeImage": None}, {"RandomErasing": {"epsilon": 0.5}}])


def test_dataset_seeds_the_new_ops_by_seed_epoch_index(tiny_data):
    from ppssld.data.datasets.imagenet import ImageNetDataset

    root, paths = tiny_data
    ops = [{"DecodeImage": None}, {"TimmAutoAugment": {"config_str": "rand-m9-mstd0.5-inc1"}},
           {"ColorJitter": {"brightness": 0.4, "hue": 0.1}}, {"NormalizeImage": {"order": ""}},
           {"RandomErasing": {"EPSILON": 0.5, "mode": "pixel"}}, {"ToCHWImage": None}]
    ds = ImageNetDataset(root, paths["train_list.txt"], ops)
    ds.set_seed(3)
    ds.set_epoch(2)
    first = [ds.load(i) for i in range(6)]
    assert all(np.array_equal(a, ds.load(i)) for i, a in enumerate(first))
    ds.set_epoch(3)
    assert not all(np.array_equal(a, ds.load(i)) for i, a in enumerate(first))


def test_decode_to_np_false_is_rgb_hwc_as_paddleclas():
    import cv2

    img = _img(8, 10)
    data = cv2.imencode(".png", img[:, :, ::-1])[1].tobytes()
    for to_rgb, channel_first in ((True, False), (False, True)):
        out = build_transforms([{"DecodeImage": {"to_np": False, "to_rgb": to_rgb, "channel_first": channel_first,
                                                 "backend": "pil"}}])(data)
        assert np.array_equal(out, img)
