"""fp32 vs post-training int8 vs quantization-aware distilled int8 (Slim.quant): top-1 on the Fashion-MNIST test set.

    python benchmark/studies/quant_aware_distill.py [--work DIR] [--qad_epochs 2] [--unlabeled 10000] [--threads 1]

Stages (each skipped when its output exists in --work, so an interrupted run goes on):

1. data: ``tools/prepare_data.py --dataset fashion_mnist --labeled 5000 --unlabeled U`` (10,000 test images);
2. student: MobileNetV3_small_x0_35, CE for 4 epochs on the 5,000 labeled images (the PTQ benchmark's student);
3. teacher: ResNet18, 1 epoch on the labeled images plus the unlabeled ones with their true labels (a teacher that
   saw more labels than the student, SSLD's premise);
4. qad: ``ssld_R18_MV3_small_x0_35.yaml`` + ``Slim.quant: {name: pact}`` from the fp32 student for --qad_epochs
   epochs on labeled + unlabeled images (JS divergence to the frozen fp32 teacher only);
5. distill: the same run without ``Slim`` (the float control: what distillation alone gives);
5b. qad_self: QAD with the fp32 student as its own frozen teacher (no distillation gain: the int8 cost alone);
6. measure: exports (fp32 Paddle + ONNX; PTQ int8 of the fp32 student and of the control, 8-bit and 7-bit weights,
   three calibration samples; the QAD int8 folder of ``tools/export_model.py``), top-1 of each on every test image,
   the fake-quant student's top-1 in Paddle and its agreement with the int8 model.

Writes benchmark/results/studies/quant_aware_distill.{md,json}.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List

import numpy as np

if __package__ in (None, ""):  # run as a file: the repository root on sys.path, as ``-m`` would have it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmark import common  # noqa: E402  (ppssld first: the thread count before paddle)

ROOT = common.ROOT
QS = os.path.join(ROOT, "ppcls_configs", "quick_start", "fashion_mnist")
STUDENT = "MobileNetV3_small_x0_35"


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/qad/bench", help="working folder (default /tmp/qad/bench)")
    p.add_argument("--unlabeled", type=int, default=10000, help="unlabeled training images (default 10000)")
    p.add_argument("--qad_epochs", type=int, default=2, help="QAD (and control) epochs (default 2)")
    p.add_argument("--qad_unlabeled", type=int, default=5000,
                   help="unlabeled images the QAD (and control) runs train on, the first of the list (default 5000)")
    p.add_argument("--qad_lr", type=float, default=0.01, help="QAD (and control) learning rate (default 0.01)")
    p.add_argument("--method", default="pact", help="Slim.quant.name (default pact)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every stage (default 1)")
    p.add_argument("--stop_after", default=None,
                   help="stop after this stage (data, student, teacher, qad, distill, qad_self)")
    return p.parse_args()


def data_overrides(data: str, unlabeled: bool) -> List[str]:
    """``-o`` overrides pointing a quick-start config at ``data`` (unlabeled: ``unlabeled_qad.txt``)."""
    out = [f"DataLoader.{m}.dataset.image_root={data}/images/" for m in ("Train", "Eval")]
    out += [f"DataLoader.Train.dataset.cls_label_path={data}/train_list.txt",
            f"DataLoader.Eval.dataset.cls_label_path={data}/val_list.txt", f"Global.class_names={data}/label_list.txt"]
    if unlabeled:
        out.append(f"DataLoader.Train.dataset.unlabeled_label_path={data}/unlabeled_qad.txt")
    return out


def run(cmd: List[str], log: str, threads: int) -> float:
    """Run ``cmd`` (a tools/ script), its output into ``log``; seconds taken."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=ROOT)
    start = time.time()
    with open(log, "w", encoding="utf-8") as handle:
        proc = subprocess.run([sys.executable] + cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed (exit {proc.returncode}); see {log}")
    return time.time() - start


def train(work: str, name: str, config: str, overrides: List[str], threads: int, times: Dict[str, float]) -> str:
    """``tools/train.py -c config -o ...`` into ``work/name`` (skipped when its ``latest`` exists)."""
    out = os.path.join(work, name)

    def latest() -> List[str]:
        return [os.path.join(out, d, "latest") for d in sorted(os.listdir(out))
                if os.path.isfile(os.path.join(out, d, "latest.pdparams"))] if os.path.isdir(out) else []

    if not latest():
        cmd = [os.path.join(ROOT, "tools", "train.py"), "-c", config, "-o", f"Global.output_dir={out}",
               "-o", "Global.eval_during_train=False"] + [a for o in overrides for a in ("-o", o)]
        times[name] = run(cmd, os.path.join(work, f"{name}.log"), threads)
    return latest()[0]


def stages(args: argparse.Namespace, times: Dict[str, float]) -> Dict[str, str]:
    """Stages 1-5 (see the module docstring); returns the checkpoints."""
    work = os.path.abspath(args.work)
    data = os.path.join(work, "data")
    os.makedirs(work, exist_ok=True)
    if not os.path.isfile(os.path.join(data, "val_list.txt")):
        times["data"] = run([os.path.join(ROOT, "tools", "prepare_data.py"), "--dataset", "fashion_mnist", "--out",
                             data, "--labeled", "5000", "--unlabeled", str(args.unlabeled)],
                            os.path.join(work, "data.log"), args.threads)
    ckpt: Dict[str, str] = {}
    if args.stop_after == "data":
        return ckpt
    ckpt["student"] = train(work, "student", os.path.join(QS, "student_MV3_small_x0_35_ce.yaml"),
                            data_overrides(data, False) + ["Global.epochs=4"], args.threads, times)
    if args.stop_after == "student":
        return ckpt
    teacher_list = os.path.join(data, "teacher_list.txt")
    if not os.path.isfile(teacher_list):
        with open(teacher_list, "w", encoding="utf-8") as handle:
            for part in ("train_list.txt", os.path.join("analysis", "unlabeled_true_labels.txt")):
                handle.write(open(os.path.join(data, part), encoding="utf-8").read())
    ckpt["teacher"] = train(work, "teacher", os.path.join(QS, "teacher_ResNet18_1ep.yaml"),
                            data_overrides(data, False) + [f"DataLoader.Train.dataset.cls_label_path={teacher_list}"],
                            args.threads, times)
    if args.stop_after == "teacher":
        return ckpt
    with open(os.path.join(data, "unlabeled_list.txt"), encoding="utf-8") as handle:
        rows = handle.readlines()[: args.qad_unlabeled]
    with open(os.path.join(data, "unlabeled_qad.txt"), "w", encoding="utf-8") as handle:
        handle.writelines(rows)
    distill = data_overrides(data, True) + [
        f"Global.epochs={args.qad_epochs}", f"Optimizer.lr.learning_rate={args.qad_lr}", "Optimizer.lr.warmup_epoch=0",
        f"Arch.models.Teacher.pretrained={ckpt['teacher']}", f"Arch.models.Student.pretrained={ckpt['student']}"]
    config = os.path.join(QS, "ssld_R18_MV3_small_x0_35.yaml")
    ckpt["qad"] = train(work, "qad", config, distill + ["Slim={quant: {name: %s}}" % args.method], args.threads, times)
    if args.stop_after == "qad":
        return ckpt
    ckpt["distill"] = train(work, "distill", config, distill, args.threads, times)
    if args.stop_after == "distill":
        return ckpt
    ckpt["qad_self"] = train(work, "qad_self", config, distill + self_teacher(ckpt) + [
        "Slim={quant: {name: %s}}" % args.method], args.threads, times)
    return ckpt


def self_teacher(ckpt: Dict[str, str]) -> List[str]:
    """Overrides making the fp32 student its own frozen teacher (QAD that isolates the int8 cost)."""
    return [f"Arch.models.Teacher.name={STUDENT}", f"Arch.models.Teacher.pretrained={ckpt['student']}"]


def measure(args: argparse.Namespace, ckpt: Dict[str, str]) -> Dict[str, Any]:
    """Stage 6: exports and top-1 on the test set."""
    import paddle

    from ppssld.data.datasets.imagenet import build_dataset
    from ppssld.engine.builder import build_eval_model
    from ppssld.export.inference import export_model
    from ppssld.export.quantize import export_int8
    from ppssld.export.runtime import Predictor
    from ppssld.utils.config import load_config

    work = os.path.abspath(args.work)
    data = os.path.join(work, "data")
    cfg_ce = load_config(os.path.join(QS, "student_MV3_small_x0_35_ce.yaml"), data_overrides(data, False))
    distill = data_overrides(data, True) + [f"Arch.models.Teacher.pretrained={ckpt['teacher']}"]
    cfg_qad = load_config(os.path.join(QS, "ssld_R18_MV3_small_x0_35.yaml"),
                          distill + ["Slim={quant: {name: %s}}" % args.method,
                                     f"Global.pretrained_model={ckpt['qad']}"])
    cfg_dis = load_config(os.path.join(QS, "ssld_R18_MV3_small_x0_35.yaml"),
                          distill + [f"Global.pretrained_model={ckpt['distill']}"])
    dataset = build_dataset(cfg_ce["DataLoader"]["Eval"]["dataset"], "DataLoader.Eval.dataset")
    items = [open(dataset.full_path(i), "rb").read() for i in range(len(dataset))]
    labels = np.array([dataset.records[i].label for i in range(len(dataset))])
    rows: List[Dict[str, Any]] = []
    outputs: Dict[str, np.ndarray] = {}

    def score(name: str, folder: str, extra: Dict[str, Any]) -> None:
        start = time.time()
        out = Predictor(folder, batch_size=250, cpu_threads=args.threads).outputs(items)
        outputs[name] = out
        rows.append({"model": name, "top1": float((out.argmax(1) == labels).mean()), "folder": folder,
                     "size_mb": sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
                                    if f.startswith("inference.") and not f.endswith(".yml")) / 1e6,
                     "eval_s": time.time() - start, **extra})

    fp32 = export_model(cfg_ce, weights=ckpt["student"], save_dir=os.path.join(work, "export", "fp32"), with_hub=False)
    score("fp32 student (Paddle Inference)", fp32.model_dir, {"kind": "fp32"})
    cfg_t = load_config(os.path.join(QS, "teacher_ResNet18_1ep.yaml"), data_overrides(data, False))
    teacher = export_model(cfg_t, weights=ckpt["teacher"], save_dir=os.path.join(work, "export", "teacher"),
                           with_hub=False)
    score("teacher ResNet18 (Paddle Inference)", teacher.model_dir, {"kind": "teacher"})
    for label, cfg, weights in (("fp32 student", cfg_ce, ckpt["student"]), ("fp32 distilled control", cfg_dis, None)):
        for reduce in (False, True):
            for seed in (0, 1, 2):
                res = export_int8(cfg, weights=weights, calib_images=512, seed=seed, reduce_range=reduce,
                                  save_dir=os.path.join(work, "export", f"ptq_{label[:9]}_{int(reduce)}_{seed}"))
                score(f"PTQ int8 of the {label}, {'7' if reduce else '8'}-bit weights, calibration seed {seed}",
                      res.model_dir, {"kind": "ptq", "of": label, "reduce_range": reduce, "seed": seed})
    dis = export_model(cfg_dis, save_dir=os.path.join(work, "export", "distill"), with_hub=False)
    score("fp32 distilled control (Paddle Inference)", dis.model_dir, {"kind": "fp32 control"})
    qad = export_model(cfg_qad, save_dir=os.path.join(work, "export", "qad"), with_hub=False)
    score("QAD int8 (Slim.quant, ONNX Runtime)", qad.int8_dir, {"kind": "qad"})
    score("QAD student's float weights (Paddle Inference)", qad.model_dir, {"kind": "qad float"})
    cfg_self = load_config(os.path.join(QS, "ssld_R18_MV3_small_x0_35.yaml"), distill + self_teacher(ckpt) + [
        "Slim={quant: {name: %s}}" % args.method, f"Global.pretrained_model={ckpt['qad_self']}"])
    own = export_model(cfg_self, save_dir=os.path.join(work, "export", "qad_self"), with_hub=False)
    score("QAD int8, the fp32 student as its own teacher", own.int8_dir, {"kind": "qad self"})
    model = build_eval_model(cfg_qad)
    model.eval()
    arrays = np.stack([dataset.load(i) for i in range(len(dataset))])
    with paddle.no_grad():
        fq = np.concatenate([paddle.nn.functional.softmax(model(paddle.to_tensor(arrays[i:i + 250]))["Student"]).numpy()
                             for i in range(0, len(arrays), 250)])
    int8 = outputs["QAD int8 (Slim.quant, ONNX Runtime)"]
    agree = {"fake_quant_top1": float((fq.argmax(1) == labels).mean()),
             "int8_vs_fake_quant_same_class": float((fq.argmax(1) == int8.argmax(1)).mean()),
             "int8_vs_fake_quant_mean_abs_prob": float(np.abs(fq - int8).mean()),
             "int8_vs_fake_quant_max_abs_prob": float(np.abs(fq - int8).max()),
             "float_vs_fake_quant_same_class": float(
                 (fq.argmax(1) == outputs["QAD student's float weights (Paddle Inference)"].argmax(1)).mean()),
             "float_vs_fake_quant_mean_abs_prob": float(
                 np.abs(fq - outputs["QAD student's float weights (Paddle Inference)"]).mean())}
    with open(os.path.join(qad.int8_dir, "inference.yml"), encoding="utf-8") as handle:
        int8_yml = handle.read()
    return {"rows": rows, "fake_quant": agree, "qad_inference_yml": int8_yml}


def isa_flags() -> List[str]:
    """The CPU's SIMD flags that decide how ONNX Runtime computes int8 (VNNI: exact; AVX2 only: int16 pair sums)."""
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    keep = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
    return [f for f in keep if f in flags]


def markdown(payload: Dict[str, Any]) -> str:
    """The results page."""
    rows = payload["measure"]["rows"]
    base = rows[0]["top1"]
    control = next(r["top1"] for r in rows if r["kind"] == "fp32 control")
    lines = [f"CPU SIMD flags: {', '.join(payload['isa_flags'])}. Test images: 10,000 (Fashion-MNIST test set). "
             f"Student {STUDENT}; times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in payload["times"].items()) + ".",
             "", "| model | top-1 | vs fp32 student | vs fp32 distilled control | size (MB) |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['top1'] * 100:.2f}% | {(row['top1'] - base) * 100:+.2f} | "
                     f"{(row['top1'] - control) * 100:+.2f} | {row['size_mb']:.2f} |")
    lines += ["", "PTQ, mean over the three calibration samples (top-1 change, points):", "",
              "| of | weights | mean | worst | best |", "|---|---|---|---|---|"]
    for of in ("fp32 student", "fp32 distilled control"):
        ref = base if of == "fp32 student" else control
        for reduce in (False, True):
            vals = [(r["top1"] - ref) * 100 for r in rows if r["kind"] == "ptq" and r["of"] == of
                    and r["reduce_range"] == reduce]
            lines.append(f"| {of} | {'7' if reduce else '8'}-bit | {np.mean(vals):+.2f} | {min(vals):+.2f} | "
                         f"{max(vals):+.2f} |")
    fq = payload["measure"]["fake_quant"]
    lines += ["", f"Fake-quant student in Paddle (what training evaluates): top-1 {fq['fake_quant_top1'] * 100:.2f}%; "
              f"the int8 model gives the same class on {fq['int8_vs_fake_quant_same_class'] * 100:.2f}% of the test "
              f"images (its float weights without fake quantization: {fq['float_vs_fake_quant_same_class'] * 100:.2f}%"
              f"), probabilities within {fq['int8_vs_fake_quant_mean_abs_prob']:.4f} on average "
              f"(at most {fq['int8_vs_fake_quant_max_abs_prob']:.3f}; the float weights: "
              f"{fq['float_vs_fake_quant_mean_abs_prob']:.4f}).", "",
              "The QAD int8 folder's `inference.yml` `quantization` block:", "", "```yaml",
              payload["measure"]["qad_inference_yml"].split("PreProcess:")[0].split("quantization:\n", 1)[-1].rstrip(),
              "```", ""]
    return "\n".join(lines)


def main() -> None:
    """Run the stages, measure, write the results files."""
    args = parse_args()
    times: Dict[str, float] = {}
    stamp = os.path.join(os.path.abspath(args.work), "times.json")
    if os.path.isfile(stamp):
        with open(stamp, encoding="utf-8") as handle:
            times.update(json.load(handle))
    try:
        ckpt = stages(args, times)
    finally:
        os.makedirs(os.path.abspath(args.work), exist_ok=True)
        with open(stamp, "w", encoding="utf-8") as handle:
            json.dump(times, handle)
    if args.stop_after:
        print(f"stopped after {args.stop_after}: {ckpt}")
        return
    start = time.time()
    result = measure(args, ckpt)
    times["measure"] = time.time() - start
    payload = {"settings": vars(args), "isa_flags": isa_flags(), "checkpoints": ckpt, "times": times,
               "measure": result}
    print(common.write_results("quant_aware_distill", payload, markdown(payload), common.results_dir(__file__)))


if __name__ == "__main__":
    main()
