"""Zoo arguments of PaddleClas configs: DeiT drop_path_rate, Swin use_fused_linear, Twins names."""
import logging

import numpy as np
import paddle
import pytest

from ppssld.arch.zoo import backbone_names, build_backbone
from ppssld.utils.errors import ConfigError


@pytest.mark.parametrize("name", ["DeiT_tiny_patch16_224", "DeiT_tiny_distilled_patch16_224"])
def test_deit_drop_path_rate_reaches_the_blocks(name):
    plain = build_backbone(name, class_num=4)
    assert all(type(b.drop_path).__name__ == "Identity" for b in plain.blocks)
    model = build_backbone(name, class_num=4, drop_path_rate=0.1)
    probs = [getattr(b.drop_path, "drop_prob", 0.0) for b in model.blocks]
    np.testing.assert_allclose(probs, np.linspace(0, 0.1, len(model.blocks)), rtol=1e-6)


def test_deit_still_refuses_an_unknown_argument():
    with pytest.raises(ConfigError, match="no parameter 'drop_path_rat'.*drop_path_rate"):
        build_backbone("DeiT_tiny_patch16_224", class_num=4, drop_path_rat=0.1)


def test_swin_use_fused_linear_builds_the_same_model_and_logs_once(caplog):
    caplog.set_level(logging.INFO, logger="ppssld.arch.zoo")
    name = "SwinTransformer_tiny_patch4_window7_224"
    x = paddle.to_tensor(np.random.RandomState(0).rand(1, 3, 224, 224).astype("float32"))
    outs, states = [], []
    for kwargs in ({}, {"use_fused_linear": False}, {"use_fused_linear": True}, {"use_fused_linear": True}):
        paddle.seed(3)
        model = build_backbone(name, class_num=3, **kwargs)
        model.eval()
        states.append({k: tuple(v.shape) for k, v in model.state_dict().items()})
        outs.append(model(x).numpy())
    assert states[0] == states[1] == states[2]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    notes = [r for r in caplog.records if "use_fused_linear" in r.getMessage()]
    assert len(notes) == 1 and "standard layer" in notes[0].getMessage()


def test_swin_refuses_an_option_that_is_not_speed_only():
    with pytest.raises(ConfigError, match="no parameter 'use_fused_linaer'"):
        build_backbone("SwinTransformer_tiny_patch4_window7_224", class_num=3, use_fused_linaer=True)


def test_twins_backbones_come_from_the_installed_zoo():
    names = backbone_names()
    for name in ("pcpvt_small", "pcpvt_base", "pcpvt_large", "alt_gvt_small", "alt_gvt_base", "alt_gvt_large"):
        assert name in names
    assert "get_apis" not in names
    model = build_backbone("alt_gvt_small", class_num=5)
    model.eval()
    out = model(paddle.rand([1, 3, 224, 224]))
    assert tuple(out.shape) == (1, 5)


def test_a_zero_rate_the_backbone_lacks_is_off_and_a_non_zero_one_is_refused():
    paddle.seed(1)
    plain = build_backbone("StarNet_S1", class_num=3)
    paddle.seed(1)
    zero = build_backbone("StarNet_S1", class_num=3, drop_rate=0, drop_path_rate=0)
    for key, value in plain.state_dict().items():
        np.testing.assert_array_equal(zero.state_dict()[key].numpy(), value.numpy())
    with pytest.raises(ConfigError, match="StarNet_S1.*no parameter 'drop_rate'"):
        build_backbone("StarNet_S1", class_num=3, drop_rate=0.1)
