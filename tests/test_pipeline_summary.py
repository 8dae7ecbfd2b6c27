"""The main job's final table, picture and next commands, from recorded stage results (no training)."""
import os
import sys

from ppssld.recipes.ssld.summary import next_commands, plot_summary, summary_figure, summary_table, warmup_note


def _results(tmp_path):
    curve = lambda tops, per: [{"epoch": i + 1, "images_seen": (i + 1) * per, "top1": t}  # noqa: E731
                               for i, t in enumerate(tops)]
    out = str(tmp_path / "run")
    return {
        "data": {"counts": {"train_labeled": 5000, "unlabeled": 55000, "val": 10000, "teacher_labeled": 40000}},
        "teacher": {"arch": "ResNet18", "epochs": 1, "images_seen": 40000, "top1": 0.8544,
                    "best_model": f"{out}/teacher/ResNet18/best_model"},
        "mine": {"selected": 2900, "scored": 6000, "removed_duplicates": 900, "teacher_right": 0.9412,
                 "report": f"{out}/mine/report.json", "selected_list": f"{out}/mine/selected_list.txt"},
        "baseline": {"arch": "MobileNetV3_small_x0_35", "epochs": 4, "images_seen": 19968, "top1": 0.6800,
                     "curve": curve([0.40, 0.55, 0.64, 0.68], 4992), "best_model": f"{out}/baseline/x/best_model"},
        "distill": {"arch": "DistillationModel", "epochs": 2, "images_seen": 15744, "top1": 0.7210,
                    "curve": curve([0.30, 0.7210], 7872), "best_model": f"{out}/distill/DistillationModel/best_model",
                    "config_used": f"{out}/distill/DistillationModel/config.yaml"},
        "finetune": {"arch": "DistillationModel", "epochs": 1, "images_seen": 4992, "top1": 0.7333,
                     "curve": curve([0.7333], 4992), "best_model": f"{out}/finetune/DistillationModel/best_model",
                     "config_used": f"{out}/finetune/DistillationModel/config.yaml"},
        "export": {"model_dir": f"{out}/export/MobileNetV3_small_x0_35_ssld_infer",
                   "predicted_image": f"{out}/data/student/images/val/00000.png", "prediction": {},
                   "speed": {"teacher": {"params": 11185866, "images_per_s": 480.0, "batch_size": 128},
                             "student": {"params": 397090, "images_per_s": 1050.0, "batch_size": 128}},
                   "showcase": [{"image": "val/00000.png", "predicted": "Sneaker", "predicted_id": 7, "score": 0.61,
                                 "true": "Ankle boot", "true_id": 9},
                                {"image": "val/00001.png", "predicted": "Pullover", "predicted_id": 2, "score": 0.9,
                                 "true": "Pullover", "true_id": 2}]},
    }


def test_table_has_baseline_gain_in_bold_size_speed_and_showcase(tmp_path):
    table = summary_table(_results(tmp_path))
    rows = table.splitlines()
    assert rows[0] == "| model | top-1 (test) | vs CE baseline | parameters | inference img/s | artefact |"
    teacher, base, ssld, tuned = rows[2:6]
    assert teacher.startswith("| teacher ResNet18 (1 epoch on 40,000 labels) | 85.44% |  | 11.19M | 480 |")
    assert base.startswith("| CE baseline MobileNetV3_small_x0_35 (4 epochs on the 5,000 labeled, 19,968 images seen) "
                           "| 68.00% |  | 0.40M | 1,050 |")
    assert "| 72.10% | **+4.10 points** | 0.40M | 1,050 |" in ssld and "+ 2,900 mined" in ssld
    assert "| 73.33% | **+5.33 points** |" in tuned and "20,736 images seen in all" in tuned
    assert "teacher's class right for 94.12%" in table
    assert "| 00000.png | Sneaker (wrong) | 0.61 | Ankle boot |" in table
    assert "| 00001.png | Pullover (right) | 0.90 | Pullover |" in table


def test_picture_is_written(tmp_path):
    path = tmp_path / "summary.png"
    assert plot_summary(_results(tmp_path), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10000
    assert not plot_summary({"data": {}}, str(tmp_path / "none.png")) and not (tmp_path / "none.png").exists()


def _figure_texts(results):
    """The bar axes' limits, the bars' labels (by their first line) and every text in the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    fig = summary_figure(results)
    try:
        bars = fig.axes[0]
        labels = {t.get_text().split("\n")[0]: t.get_text() for t in bars.get_yticklabels()}
        texts = [t.get_text() for t in fig.findobj(Text)]
        return bars.get_xlim(), labels, texts
    finally:
        plt.close(fig)


def test_picture_bars_start_at_zero_and_name_label_budget_run_and_cost(tmp_path):
    limits, labels, texts = _figure_texts(_results(tmp_path))
    assert limits == (0.0, 100.0)  # the whole top-1 scale: a 4-point gain looks like 4 points
    teacher, base = labels["teacher ResNet18"], labels["CE baseline"]
    ssld, tuned = labels["SSLD student"], labels["SSLD + fine-tune"]
    assert "40,000 labels" in teacher and "1 epoch · 40,000 images seen" in teacher
    assert "11.19M params · 480 img/s" in teacher
    assert "5,000 labels" in base and "4 epochs · 19,968 images seen" in base and "params" not in base
    assert "5,000 labels + 2,900 mined" in ssld and "2 epochs · 15,744 images seen" in ssld
    assert "+1 epoch · 20,736 images seen in all" in tuned and "0.40M params · 1,050 img/s" in tuned
    assert "72.1%  +4.1 points vs CE" in texts and "73.3%  +5.3 points vs CE" in texts and "68.0%" in texts
    caption = next(t for t in texts if t.startswith("Run length:"))
    assert "teacher 1 epoch, CE baseline 4 epochs, SSLD student 2 + 1 epochs" in caption
    assert "batch 128" in caption


def test_picture_omits_what_was_not_recorded(tmp_path):
    results = _results(tmp_path)
    for stage in ("mine", "finetune", "export"):
        del results[stage]
    results["teacher"] = {"best_model": "given.pdparams", "top1": None, "given": True}
    results["distill"]["teacher_top1"] = 0.85
    del results["data"]["counts"]["teacher_labeled"]
    limits, labels, texts = _figure_texts(results)
    assert limits == (0.0, 100.0)
    assert labels["teacher (given weights)"] == "teacher (given weights)"
    assert "5,000 labels + 55,000 unlabeled" in labels["SSLD student"]  # no mining: the whole unlabeled list
    joined = "\n".join(texts)
    assert "params" not in joined and "img/s" not in joined and "None" not in joined and "fine-tune" not in joined


def test_next_commands_name_the_final_stage_and_export(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = next_commands(_results(tmp_path))
    evaluate = next(ln for ln in lines if "eval.py" in ln)
    assert evaluate.startswith(sys.executable + " ")  # the interpreter that ran the pipeline
    assert "-c run/finetune/DistillationModel/config.yaml -o Global.pretrained_model=run/finetune/" in evaluate
    predict = next(ln for ln in lines if "predict_cls.py" in ln)
    export = next(ln for ln in lines if "export_model.py" in ln)
    assert export.endswith("--save_dir run/next/inference")  # never into the export stage's own folder
    assert "--model_dir run/next/inference/MobileNetV3_small_x0_35_ssld_infer --image run/data/student/images/val/" \
           "00000.png" in predict  # the model the line before wrote
    assert os.path.isabs(predict.split()[1])  # the repository's deploy/ seen from outside it


def test_warmup_note_names_the_last_warmup_epoch_and_only_then():
    curve = [{"epoch": e, "top1": t} for e, t in ((1, 0.20), (2, 0.34), (3, 0.70))]
    config = {"Optimizer": {"lr": {"warmup_epoch": 2}}}
    note = warmup_note("distill", config, curve)
    assert note.startswith("distill: the evaluation after epoch 2 (34.00%)")
    assert warmup_note("distill", {"Optimizer": {"lr": {}}}, curve) is None
    # the warm-up covers every evaluated epoch but the last: nothing earlier to explain
    assert warmup_note("distill", config, curve[2:]) is None



def test_every_stage_record_has_its_runner_and_reads_only_earlier_stages():
    from ppssld.recipes.ssld import Pipeline
    from ppssld.recipes.ssld.stages import STAGES

    names = [s.name for s in STAGES]
    job = Pipeline({"output_dir": "unused", "data": {}})
    for position, stage in enumerate(STAGES):
        assert callable(job.runner(stage)), stage.name
        assert set(stage.reads) <= set(names[:position]), (stage.name, stage.reads)
    assert not STAGES[3].enabled({"baseline": None}) and STAGES[3].enabled({"baseline": {"config": "x"}})
    assert STAGES[0].enabled({"data": {}}) and not STAGES[0].enabled({"data": {"enabled": False}})
