"""Post-training static int8 quantization of the student (ONNX Runtime).

python deploy/slim/quant_post_static.py -c cfg.yaml -o Global.pretrained_model=output/.../best_model --save_dir DIR
Writes DIR/<Student>_ssld_int8_infer/ (inference.onnx, int8, + inference.yml), calibrated on --calib_images
images of DataLoader.Train.dataset preprocessed as the export's inference.yml says. It runs in
deploy/python/predict_cls.py, PaddleClas's predict_cls.py (Global.use_onnx: True) and the PaddleHub module.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppssld.utils.deps import missing_dependency_exits  # noqa: E402  (standard library only)

with missing_dependency_exits():  # no Paddle, PyYAML, ...: one line and status 2, not a traceback
    from ppssld.utils import cli  # noqa: E402  (after the path set-up)
    from ppssld.export.quantize import CALIBRATIONS, DEFAULT_CALIB_IMAGES, FORMATS, export_int8  # noqa: E402


def main() -> None:
    """Parse arguments, load the config, export and quantize."""
    parser = cli.base_parser("Write the int8 (post-training static quantization) model of a config's student")
    parser.add_argument("--save_dir", default=None, help="output folder (default Global.save_inference_dir)")
    parser.add_argument("--name", default=None, help="base name (default <Backbone>_ssld): <name>_int8_infer/")
    parser.add_argument("--calib_images", type=int, default=DEFAULT_CALIB_IMAGES,
                        help=f"training images to calibrate on, a seeded sample (default {DEFAULT_CALIB_IMAGES})")
    parser.add_argument("--batch_size", type=int, default=32, help="images per calibration batch (default 32)")
    parser.add_argument("--format", choices=FORMATS, default="qoperator",
                        help="ONNX int8 form: QLinearConv-style operators (qoperator) or Quantize/DequantizeLinear "
                             "pairs (qdq, for runtimes that fuse them themselves); the same accuracy and speed here "
                             "(default qoperator)")
    parser.add_argument("--calibration", choices=CALIBRATIONS, default="minmax",
                        help="activation ranges: min/max, a percentile or entropy of the calibration outputs "
                             "(default minmax: benchmark/results/studies/quant_post_static.md)")
    parser.add_argument("--seed", type=int, default=None, help="calibration sample seed (default Global.seed)")
    parser.add_argument("--reduce_range", action="store_true",
                        help="7-bit weights ([-64, 64]): ONNX Runtime's int8 kernels on CPUs without VNNI (AVX2 only) "
                             "saturate with 8-bit weights and then compute wrong sums; 7-bit ones never saturate "
                             "(default: off, 8-bit)")
    args = parser.parse_args()
    config = cli.load(args)
    result = export_int8(config, save_dir=args.save_dir, name=args.name, calib_images=args.calib_images,
                         batch_size=args.batch_size, fmt=args.format, seed=args.seed, calibration=args.calibration,
                         reduce_range=args.reduce_range)
    quant = result.infer_config["Global"]["quantization"]
    print(f"int8 model: {result.model_dir} ({quant['quantized_nodes']} quantized nodes, calibrated on "
          f"{quant['calibration_images']} images; {result.fp32_bytes / 1e6:.2f} MB fp32 ONNX -> "
          f"{result.int8_bytes / 1e6:.2f} MB)")


if __name__ == "__main__":
    cli.run(main)
