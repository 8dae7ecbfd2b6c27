"""The steps of ``gpu_check.py``: data, teacher, cache generation, training arms, AMP parity, predictor.

Each step returns a row ``{"step", "status": "ok" | "FAILED", "detail", ...figures}``; a dry run builds
every step (configs load, models build, tools parse, tiny 1-step runs on the CPU) and times nothing.
"""
import copy
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

import numpy as np

from benchmark.common import ROOT
CONFIGS = os.path.join(ROOT, "ppcls_configs", "quick_start", "fashion_mnist")
STUDENT_YAML = os.path.join(CONFIGS, "student_MV3_small_x0_35_ce.yaml")
DISTILL_YAML = os.path.join(CONFIGS, "ssld_R18_MV3_small_x0_35.yaml")
CACHE_TOOL = os.path.join(ROOT, "tools", "cache_soft_labels.py")
PRECISIONS = {"fp32": [], "amp_O1": ["AMP.use_amp=True", "AMP.level=O1", "AMP.scale_loss=128.0",
                                      "AMP.use_dynamic_loss_scaling=True"],
              "amp_O2": ["AMP.use_amp=True", "AMP.level=O2", "AMP.scale_loss=128.0",
                         "AMP.use_dynamic_loss_scaling=True"]}
ARMS = ("online_distillation", "cache_distillation", "student_ce")
PARITY_TOL = 1e-2
CLASSES = 10

logger = logging.getLogger("gpu_check")


@dataclass
class Plan:
    """What a run does: sizes, device, folders."""
    work: str
    dry_run: bool
    device: str
    train_images: int
    val_images: int
    unlabeled_images: int
    epochs: int
    batch: int
    views: int
    topk: int
    paths: Dict[str, str] = field(default_factory=dict)
    checkpoints: Dict[str, str] = field(default_factory=dict)


def row(step: str, status: str, detail: str, **figures: Any) -> Dict[str, Any]:
    """One report row."""
    return {"step": step, "status": status, "detail": detail, **figures}


def guarded(step: str, body: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """Run one step; any exception becomes a FAILED row naming it (the run goes on to the next step)."""
    try:
        return body()
    except Exception as exc:  # noqa: BLE001  (a report: every step's failure is recorded, none is fatal)
        logger.exception("step %s failed", step)
        return row(step, "FAILED", f"{type(exc).__name__}: {str(exc).strip()[:400]}")


def make_data(plan: Plan) -> Dict[str, Any]:
    """Class-coloured noisy 32x32 PNGs: labeled train, unlabeled pool, val; label_list.txt; a random teacher."""
    import cv2
    import paddle

    from ppssld.arch.zoo import build_backbone

    root = os.path.join(plan.work, "data")
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    rng = np.random.RandomState(0)
    lists: Dict[str, List[str]] = {"train_list.txt": [], "unlabeled_list.txt": [], "val_list.txt": []}
    counts = (("train_list.txt", plan.train_images), ("unlabeled_list.txt", plan.unlabeled_images),
              ("val_list.txt", plan.val_images))
    index = 0
    for name, count in counts:
        for _ in range(count):
            label = index % CLASSES
            base = np.zeros((32, 32, 3), np.float32)
            base[..., label % 3] = 60 + 150 * label / (CLASSES - 1)
            img = np.clip(base + rng.randn(32, 32, 3) * 60, 0, 255).astype(np.uint8)
            rel = f"images/{index:06d}.png"
            cv2.imwrite(os.path.join(root, rel), img)
            lists[name].append(rel if name == "unlabeled_list.txt" else f"{rel} {label}")
            index += 1
    for name, lines in lists.items():
        plan.paths[name] = os.path.join(root, name)
        with open(plan.paths[name], "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    plan.paths["label_list.txt"] = os.path.join(root, "label_list.txt")
    with open(plan.paths["label_list.txt"], "w", encoding="utf-8") as handle:
        handle.write("".join(f"{i} class_{i}\n" for i in range(CLASSES)))
    plan.paths["root"] = root
    paddle.seed(0)
    plan.paths["teacher"] = os.path.join(plan.work, "teacher")
    paddle.save(build_backbone("ResNet18", class_num=CLASSES).state_dict(), plan.paths["teacher"] + ".pdparams")
    return row("data", "ok", f"{plan.train_images} labeled + {plan.unlabeled_images} unlabeled train, "
                             f"{plan.val_images} val images (synthetic, {CLASSES} classes, 32x32); random ResNet18 "
                             f"teacher (throughput does not depend on its weights)")


def overrides(plan: Plan, arm: str, precision: str) -> List[str]:
    """The ``-o`` list turning a shipped quick-start config into this run's arm."""
    data = plan.paths
    out = [f"Global.device={plan.device}", f"Global.epochs={plan.epochs}", "Global.print_batch_step=20",
           f"Global.output_dir={os.path.join(plan.work, 'out', f'{arm}_{precision}')}",
           f"Global.class_names={data['label_list.txt']}", f"Global.save_interval={plan.epochs}",
           f"Infer.PostProcess.class_id_map_file={data['label_list.txt']}",
           f"DataLoader.Train.sampler.batch_size={plan.batch}", f"DataLoader.Eval.sampler.batch_size={plan.batch}"]
    for mode, lst in (("Train", "train_list.txt"), ("Eval", "val_list.txt")):
        out += [f"DataLoader.{mode}.dataset.image_root={data['root']}",
                f"DataLoader.{mode}.dataset.cls_label_path={data[lst]}"]
        if plan.dry_run:
            out += [f"DataLoader.{mode}.loader.num_workers=0", f"DataLoader.{mode}.loader.use_shared_memory=False"]
    if arm != "student_ce":
        out += [f"DataLoader.Train.dataset.unlabeled_label_path={data['unlabeled_list.txt']}",
                f"Arch.models.Teacher.pretrained={data['teacher']}"]
    if arm == "cache_distillation":
        out.append(f"Global.soft_label_cache={data.get('cache', os.path.join(plan.work, 'cache'))}")
    return out + PRECISIONS[precision]


def load(plan: Plan, arm: str, precision: str) -> Dict[str, Any]:
    """The arm's config: a shipped PaddleClas-schema YAML plus :func:`overrides`."""
    from ppssld.utils.config import load_config

    return load_config(STUDENT_YAML if arm == "student_ce" else DISTILL_YAML, overrides(plan, arm, precision))


def cache_step(plan: Plan) -> Dict[str, Any]:
    """``tools/cache_soft_labels.py`` on the distillation config (issue 15 points 1-2): time and img/s."""
    import yaml

    if not os.path.isfile(CACHE_TOOL):
        return row("cache_generation", "FAILED", f"{os.path.relpath(CACHE_TOOL, ROOT)} is missing: the soft-label "
                                                 f"cache (issue 15 points 1-2) is not in this tree")
    cfg_path = os.path.join(plan.work, "distill_fp32.yaml")
    with open(cfg_path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(load(plan, "online_distillation", "fp32"), handle)
    plan.paths["cache"] = os.path.join(plan.work, "cache")
    cmd = [sys.executable, CACHE_TOOL, "-c", cfg_path, "--views", str(plan.views), "--topk", str(plan.topk),
           "--out", plan.paths["cache"]]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - tic
    if proc.returncode != 0:
        return row("cache_generation", "FAILED", f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
    images = (plan.train_images + plan.unlabeled_images) * plan.views
    figures = {} if plan.dry_run else {"seconds": seconds, "img_s": images / seconds}
    return row("cache_generation", "ok", f"{plan.views} views x {plan.train_images + plan.unlabeled_images} "
                                         f"images, top-{plan.topk}: `{' '.join(os.path.basename(c) for c in cmd)}`",
               **figures)


def _peak_reset(device: str) -> None:
    import paddle

    if device == "gpu":
        paddle.device.cuda.reset_max_memory_allocated()


def train_step(plan: Plan, arm: str, precision: str) -> Dict[str, Any]:
    """Train one arm with the real engine (``fit``): img/s of the epochs after the first, peak GPU memory, top-1."""
    import paddle

    from ppssld.engine.builder import build_trainer, save_dir

    name = f"train/{arm}/{precision}"
    if arm == "cache_distillation" and "cache" not in plan.paths:
        return row(name, "FAILED", "no soft-label cache was generated (see cache_generation)")
    config = load(plan, arm, precision)
    trainer = build_trainer(config)
    if plan.dry_run:  # one tiny step on the CPU: the arm builds and trains; nothing is timed
        trainer.train_loader = [next(iter(trainer.train_loader))]
    seconds: List[float] = []
    epoch_fn = trainer.train_one_epoch

    def timed(epoch: int) -> Dict[str, float]:
        tic = time.perf_counter()
        out = epoch_fn(epoch)
        seconds.append(time.perf_counter() - tic)
        return out

    trainer.train_one_epoch = timed
    _peak_reset(plan.device)
    result = trainer.fit()
    plan.checkpoints[f"{arm}/{precision}"] = os.path.join(save_dir(config), "latest")
    if plan.dry_run:
        return row(name, "ok", "built and trained 1 step (CPU; AMP is ignored on the CPU)")
    images = trainer._steps_per_epoch() * plan.batch
    timed_epochs = seconds[1:] or seconds
    peak = paddle.device.cuda.max_memory_allocated() / 2 ** 20
    return row(name, "ok", f"{plan.epochs} epochs, batch {plan.batch}", img_s=images * len(timed_epochs) /
               sum(timed_epochs), peak_mem_mib=peak, top1=result["best_metric"])


def _val_labels(plan: Plan) -> np.ndarray:
    with open(plan.paths["val_list.txt"], encoding="utf-8") as handle:
        return np.array([int(line.split()[1]) for line in handle if line.strip()])


def _val_images(plan: Plan) -> List[str]:
    with open(plan.paths["val_list.txt"], encoding="utf-8") as handle:
        return [os.path.join(plan.paths["root"], line.split()[0]) for line in handle if line.strip()]


def _eval_top1(config: Dict[str, Any], weights: str) -> float:
    from ppssld.engine.builder import build_eval_model, build_eval_pieces, eval_amp
    from ppssld.engine.evaluator import evaluate

    config = copy.deepcopy(config)
    config["Global"]["pretrained_model"] = weights
    model, amp = eval_amp(config, build_eval_model(config))
    loader, metrics, loss = build_eval_pieces(config)
    return float(evaluate(model, loader, metrics, loss, epoch=0, amp=amp)["top1"])


def parity_step(plan: Plan, precision: str) -> Dict[str, Any]:
    """The AMP-trained student: eval under AMP, eval in float32 and its exported model agree within 1e-2 top-1."""
    from ppssld.export.inference import export_model
    from ppssld.export.runtime import Predictor

    name = f"parity/student_ce/{precision}"
    weights = plan.checkpoints.get(f"student_ce/{precision}")
    if weights is None:
        return row(name, "FAILED", f"student_ce/{precision} did not train")
    config = load(plan, "student_ce", precision)
    fp32_config = load(plan, "student_ce", "fp32")
    amp_top1, fp32_top1 = _eval_top1(config, weights), _eval_top1(fp32_config, weights)
    export_dir = os.path.join(plan.work, "export", precision)
    result = export_model(fp32_config, weights=weights, save_dir=export_dir, with_hub=False)
    plan.paths[f"export/{precision}"] = result.model_dir
    predictor = Predictor(result.model_dir, device=plan.device, batch_size=plan.batch)
    scores = predictor.outputs([open(p, "rb").read() for p in _val_images(plan)])
    infer_top1 = float((scores.argmax(axis=1) == _val_labels(plan)).mean())
    values = {"eval_amp_top1": amp_top1, "eval_fp32_top1": fp32_top1, "inference_top1": infer_top1}
    gap = max(values.values()) - min(values.values())
    if plan.dry_run:
        return row(name, "ok", "eval (AMP config, ignored on the CPU), eval fp32, export and predictor built and "
                               "ran on a 1-step checkpoint; no parity claim")
    return row(name, "ok" if gap <= PARITY_TOL else "FAILED",
               f"max top-1 gap {gap:.4f} (tolerance {PARITY_TOL})", **values)


def predictor_step(plan: Plan, precision: str, variant: str) -> Dict[str, Any]:
    """Paddle Inference on the exported AMP student: ``gpu`` (no TensorRT), ``trt_fp32``, ``trt_fp16``."""
    from ppssld.export.runtime import Predictor, benchmark

    name = f"predictor/{precision}/{variant}"
    model_dir = plan.paths.get(f"export/{precision}")
    if model_dir is None:
        return row(name, "FAILED", f"no exported model for {precision} (see parity/student_ce/{precision})")
    use_trt, trt_precision = variant.startswith("trt"), "fp16" if variant.endswith("fp16") else "fp32"
    if plan.dry_run and use_trt:
        from paddle import inference

        config = inference.Config()
        if not hasattr(config, "enable_tensorrt_engine"):
            raise RuntimeError("this Paddle Inference has no enable_tensorrt_engine")
        return row(name, "ok", "TensorRT needs a GPU: only the Paddle Inference config API was checked")
    predictor = Predictor(model_dir, device=plan.device, batch_size=plan.batch, use_tensorrt=use_trt,
                          precision=trt_precision)
    arrays = [predictor.preprocess(open(p, "rb").read()) for p in _val_images(plan)]
    if plan.dry_run:
        predictor.run(np.stack(arrays[:plan.batch]))
        return row(name, "ok", "built and ran one batch on the CPU (no TensorRT)")
    timing = benchmark(predictor.run, arrays, plan.batch, warmup=3, repeats=5)
    logits = np.concatenate([predictor.run(np.stack(arrays[i:i + plan.batch]))
                             for i in range(0, len(arrays), plan.batch)])
    top1 = float((logits.argmax(axis=1) == _val_labels(plan)).mean())
    return row(name, "ok", f"batch {plan.batch}", img_s=timing["throughput_ips"],
               latency_ms_p50=timing["latency_ms_p50"], top1=top1)


def run_all(plan: Plan) -> List[Dict[str, Any]]:
    """Every step in order; a failed step is recorded and the rest still run."""
    rows = [guarded("data", lambda: make_data(plan))]
    if rows[0]["status"] != "ok":
        return rows
    rows.append(guarded("cache_generation", lambda: cache_step(plan)))
    for precision in PRECISIONS:
        for arm in ARMS:
            rows.append(guarded(f"train/{arm}/{precision}", lambda a=arm, p=precision: train_step(plan, a, p)))
    for precision in ("amp_O1", "amp_O2"):
        rows.append(guarded(f"parity/student_ce/{precision}", lambda p=precision: parity_step(plan, p)))
    for variant in ("gpu", "trt_fp32", "trt_fp16"):
        rows.append(guarded(f"predictor/amp_O2/{variant}", lambda v=variant: predictor_step(plan, "amp_O2", v)))
    return rows
