"""Training throughput: student alone (CE) vs DistillationModel (frozen teacher), side by side.

The teacher needs no backward pass, so distillation should reach at least 90% of
``1 / (1/student_train + 1/teacher_infer)``. Rounds alternate the measurements so
noise from other processes hits them alike; the median round is reported.

Soft-label cache arms (issue 15): (c) training from a cache (the student with a CachedTeacher:
memory-mapped top-K lookup, rebuild and ``log p`` per batch through ``CachedLoader``), target >= 0.85
of (a); (d) cache generation (teacher forward, softmax, top-K, chunk files written), target >= 0.9 of
bare teacher inference.

Usage: python benchmark/train_throughput.py [--rounds 3] [--steps 8] [--batch 128]
       python benchmark/train_throughput.py --host-sync --baseline-src DIR   (see host_sync.py)
"""
import argparse
import os
import statistics
import tempfile
import time

import common  # noqa: F401  (sets sys.path)
import host_sync
import paddle

from ppssld.arch.distillation import DistillationModel
from ppssld.arch.zoo import build_backbone
from ppssld.loss import build_loss

CACHE_IMAGES, CACHE_CHUNK = 4096, 1024


def _train_rate(model, loss_fn, batch, steps, distill):
    opt = paddle.optimizer.Momentum(0.01, parameters=[p for p in model.parameters() if not p.stop_gradient])
    x = paddle.rand([batch, 3, 32, 32])
    y = paddle.randint(0, 10, [batch])
    model.train()
    for i in range(steps + 2):
        if i == 2:
            tic = time.perf_counter()
        out = model(x)
        loss = loss_fn(out, y)["loss"]
        loss.backward()
        opt.step()
        opt.clear_grad()
    return batch * steps / (time.perf_counter() - tic)


def _synthetic_cache(root, k=10, classes=10):
    """A cache folder of CACHE_IMAGES random top-K rows (1 view) in the store's layout, opened."""
    import numpy as np

    from ppssld.cache import store
    from ppssld.cache.manifest import FORMAT, VERSION
    from ppssld.cache.reader import SoftLabelCache
    from ppssld.utils.io import atomic_write_json

    rng = np.random.default_rng(0)
    for c in range(CACHE_IMAGES // CACHE_CHUNK):
        probs = np.sort(rng.dirichlet(np.ones(classes), CACHE_CHUNK), axis=1)[:, ::-1][:, :k]
        store.write_chunk(root, 0, c, probs.astype("float16"),
                          np.argsort(-rng.random((CACHE_CHUNK, classes)), axis=1)[:, :k].astype(store.index_dtype(classes)))
    atomic_write_json(os.path.join(root, "manifest.json"),
                      {"format": FORMAT, "version": VERSION, "values": "probs", "views": 1, "topk": k, "class_num": classes,
                       "chunk_size": CACHE_CHUNK, "num_images": CACHE_IMAGES})
    return SoftLabelCache(root)


def _cached_train_rate(student, cache, loss_fn, batch, steps):
    """(c): the DistillationModel with a CachedTeacher, batches through CachedLoader (index -> soft labels)."""
    from ppssld.cache.reader import CachedLoader, CachedTeacher

    teacher = CachedTeacher(cache)
    model = DistillationModel({"Teacher": teacher, "Student": student}, frozen=["Teacher"],
                              infer_model_name="Student")
    x = paddle.rand([batch, 3, 32, 32])
    y = paddle.randint(0, 10, [batch])
    batches = [(x, y, paddle.randint(0, CACHE_IMAGES, [batch])) for _ in range(steps + 2)]
    opt = paddle.optimizer.Momentum(0.01, parameters=[p for p in model.parameters() if not p.stop_gradient])
    model.train()
    for i, (images, labels) in enumerate(CachedLoader(batches, None, teacher, 0)):
        if i == 2:
            tic = time.perf_counter()
        loss = loss_fn(model(images), labels)["loss"]
        loss.backward()
        opt.step()
        opt.clear_grad()
    return batch * steps / (time.perf_counter() - tic)


def _generate_rate(teacher_layer, batch, steps, root):
    """(d): what generation does per batch (teacher forward, softmax, top-K), one chunk file per step."""
    import numpy as np

    from ppssld.cache import store
    from ppssld.utils.topk import top_k
    from ppssld.teacher.frozen import Teacher

    teacher = Teacher(teacher_layer, "benchmark")
    x = np.random.default_rng(0).random((batch, 3, 32, 32), dtype=np.float32)
    for i in range(steps + 2):
        if i == 2:
            tic = time.perf_counter()
        probs, _ = teacher(x)
        store.write_chunk(root, 0, i, *top_k(probs, 10, store.index_dtype(10), "float16"))
    return batch * steps / (time.perf_counter() - tic)


@paddle.no_grad()
def _infer_rate(model, batch, steps):
    x = paddle.rand([batch, 3, 32, 32])
    model.eval()
    for i in range(steps + 2):
        if i == 2:
            tic = time.perf_counter()
        model(x)
    return batch * steps / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--host-sync", action="store_true",
                        help="instead: the real Trainer loop of this tree vs --baseline-src, student CE and "
                             "distillation arms side by side (writes results/host_sync.*)")
    host_sync.add_arguments(parser)
    args = parser.parse_args()
    if args.host_sync:
        if not args.baseline_src:
            parser.error("--host-sync needs --baseline-src DIR")
        host_sync.run(args)
        return
    paddle.seed(0)
    student = build_backbone("MobileNetV3_small_x0_35", class_num=10)
    teacher = build_backbone("ResNet18", class_num=10)
    distill = DistillationModel({"Teacher": build_backbone("ResNet18", class_num=10),
                                 "Student": build_backbone("MobileNetV3_small_x0_35", class_num=10)},
                                frozen=["Teacher"], infer_model_name="Student")
    ce = build_loss([{"CELoss": {"weight": 1.0}}])
    js = build_loss([{"JSDivLoss": {"weight": 1.0, "model_name_pairs": [["Student", "Teacher"]]}}])
    rows = []
    work = tempfile.mkdtemp(prefix="ppssld_train_throughput_")
    cache = _synthetic_cache(os.path.join(work, "cache"))
    cached_student = build_backbone("MobileNetV3_small_x0_35", class_num=10)
    for r in range(args.rounds):
        s = _train_rate(student, ce, args.batch, args.steps, False)
        t = _infer_rate(teacher, args.batch, args.steps)
        d = _train_rate(distill, js, args.batch, args.steps, True)
        c = _cached_train_rate(cached_student, cache, js, args.batch, args.steps)
        g = _generate_rate(teacher, args.batch, args.steps, os.path.join(work, f"gen{r}"))
        bound = 1.0 / (1.0 / s + 1.0 / t)
        rows.append({"round": r, "student_train": s, "teacher_infer": t, "distill_train": d, "bound": bound,
                     "ratio": d / bound, "cache_train": c, "cache_ratio": c / s, "generate": g,
                     "generate_ratio": g / t})
        print(f"round {r}: student train {s:.1f} img/s, teacher infer {t:.1f} img/s, distill train {d:.1f} "
              f"img/s, bound {bound:.1f}, ratio {d / bound:.3f}; from cache {c:.1f} img/s ({c / s:.3f} of "
              f"student), generation {g:.1f} img/s ({g / t:.3f} of teacher inference)", flush=True)
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0] if k != "round"}
    verdict = "PASS" if med["ratio"] >= 0.9 else "FAIL"
    cache_verdict = "PASS" if med["cache_ratio"] >= 0.85 else "FAIL"
    generate_verdict = "PASS" if med["generate_ratio"] >= 0.9 else "FAIL"
    md = ("| measure | img/s (median of rounds) |\n|---|---|\n"
          f"| (a) student MobileNetV3_small_x0_35 train, CE | {med['student_train']:.1f} |\n"
          f"| teacher ResNet18 inference (no grad) | {med['teacher_infer']:.1f} |\n"
          f"| (b) DistillationModel ResNet18 -> MobileNetV3_small_x0_35 train, JS | {med['distill_train']:.1f} |\n"
          f"| no-backward bound 1/(1/a + 1/teacher) | {med['bound']:.1f} |\n"
          f"| (c) training from the soft-label cache, JS (no teacher) | {med['cache_train']:.1f} |\n"
          f"| (d) cache generation (teacher + softmax + top-10 + chunk files) | {med['generate']:.1f} |\n\n"
          f"Ratio (b) / bound: **{med['ratio']:.3f}** (target >= 0.9: {verdict}). "
          f"(c) / (a): **{med['cache_ratio']:.3f}** (target >= 0.85: {cache_verdict}); (c) / (b): "
          f"{med['cache_train'] / med['distill_train']:.2f}x. (d) / teacher inference: **{med['generate_ratio']:.3f}** "
          f"(target >= 0.9: {generate_verdict}). 32x32 inputs, batch "
          f"{args.batch}, {args.steps} timed steps per measure after 2 warm-up steps, {args.rounds} interleaved "
          f"rounds; synthetic tensors (the data loader is measured in loader_throughput).\n")
    common.write_results("train_throughput", {"batch": args.batch, "steps": args.steps, "rounds": rows,
                                              "median": med, "verdict": verdict,
                                              "cache_verdict": cache_verdict, "generate_verdict": generate_verdict},
                         md)
    print(md)


if __name__ == "__main__":
    main()
