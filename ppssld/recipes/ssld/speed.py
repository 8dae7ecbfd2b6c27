"""Size and speed of a model: parameter count and measured inference images per second."""
import logging
import time
from typing import Any, Dict, Sequence

logger = logging.getLogger(__name__)


def params_and_speed(layer, image_shape: Sequence[int], batch_size: int = 128, rounds: int = 3) -> Dict[str, float]:
    """Count ``layer``'s parameters and time its eval-mode forward pass on random images.

    Args:
        layer: a ``paddle.nn.Layer``.
        image_shape: ``[C, H, W]`` of one image.
        batch_size: images per forward pass.
        rounds: timed passes after one warm-up; the median is reported.
    Returns:
        ``{"params": int, "images_per_s": float, "batch_size": int}``.
    """
    import paddle

    params = int(sum(int(p.size) for p in layer.parameters()))
    was_training = layer.training
    layer.eval()
    x = paddle.rand([int(batch_size)] + [int(v) for v in image_shape])
    times = []
    with paddle.no_grad():
        for step in range(rounds + 1):
            tic = time.perf_counter()
            out = layer(x)
            if isinstance(out, dict):
                out = next(iter(out.values()))
            float(out.sum())  # wait for the result
            if step:
                times.append(time.perf_counter() - tic)
    if was_training:
        layer.train()
    times.sort()
    return {"params": params, "images_per_s": round(batch_size / times[len(times) // 2], 1),
            "batch_size": int(batch_size)}


def teacher_student_speed(config: Dict[str, Any]) -> Dict[str, Any]:
    """Parameters and eval-mode img/s (random images at ``Global.image_shape``) of a DistillationModel
    config's teacher and student backbones (:mod:`ppssld.arch.roles`; freshly built: the architecture is
    what is timed), keyed ``teacher`` and ``student``."""
    from ppssld.arch.build import infer_model_name
    from ppssld.arch.roles import model_entries, teacher_name
    from ppssld.arch.zoo import build_backbone

    shape = (config.get("Global") or {}).get("image_shape") or [3, 224, 224]
    models = dict(model_entries(config["Arch"]))
    roles = {"teacher": teacher_name(config["Arch"]), "student": infer_model_name(config["Arch"])}
    speed: Dict[str, Any] = {}
    for label, role in roles.items():
        spec = models.get(role) if role is not None else None
        if not spec:
            continue
        kwargs = {k: v for k, v in spec.items() if k not in ("name", "class_num", "pretrained", "use_ssld")}
        layer = build_backbone(spec["name"], class_num=spec.get("class_num"), where=f"Arch.models.{role}", **kwargs)
        row = dict(params_and_speed(layer, shape), arch=spec["name"])
        speed[label] = row
        logger.info("%s %s: %.2fM parameters, %.0f img/s (eval forward, batch %d, %s)", label, spec["name"],
                    row["params"] / 1e6, row["images_per_s"], row["batch_size"], "x".join(str(v) for v in shape))
    return speed
