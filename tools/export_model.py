"""Export the student: tools/export_model.py -c cfg.yaml -o Global.pretrained_model=output/.../best_model.

Writes <save_inference_dir>/<Student>_ssld_infer/ (Paddle Inference model + inference.yml),
<save_inference_dir>/<Student>_ssld_pretrained.pdparams and .safetensors (plain backbone keys), the PaddleHub
module <save_inference_dir>/hub/<module_name>/; with Slim.quant in the config (a quantization-aware trained student) also
<save_inference_dir>/<Student>_ssld_int8_infer/ (int8 ONNX with the trained ranges + inference.yml).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppssld.utils.deps import missing_dependency_exits  # noqa: E402  (standard library only)

with missing_dependency_exits():  # no Paddle, PyYAML, ...: one line and status 2, not a traceback
    from ppssld.utils import cli  # noqa: E402  (after the path set-up)
    from ppssld.export.inference import export_model  # noqa: E402


def main() -> None:
    """Parse arguments, load the config, export."""
    parser = cli.base_parser("Export the inference (student) model of a config")
    parser.add_argument("--save_dir", default=None, help="output folder (default Global.save_inference_dir)")
    parser.add_argument("--name", default=None, help="base name (default <Backbone>_ssld): <name>_infer/, "
                                                     "<name>_pretrained.pdparams")
    parser.add_argument("--transforms", choices=("eval", "infer"), default="eval",
                        help="preprocessing to export: DataLoader.Eval transforms (default) or Infer.transforms")
    parser.add_argument("--hub_name", default=None, help="PaddleHub module name (default: name, lower case)")
    parser.add_argument("--no_hub", action="store_true", help="do not write the PaddleHub module "
                        "(default: off, it is written)")
    parser.add_argument("--onnx", action="store_true", help="also write inference.onnx "
                        "(needs paddle2onnx; default: off)")
    args = parser.parse_args()
    config = cli.load(args)
    result = export_model(config, save_dir=args.save_dir, name=args.name, transforms_from=args.transforms,
                          hub_name=args.hub_name, with_hub=not args.no_hub, with_onnx=args.onnx)
    print(f"inference model: {result.model_dir}")
    print(f"pretrained weights: {result.pretrained} (and {os.path.splitext(result.pretrained)[0]}.safetensors)")
    if result.hub_dir:
        print(f"PaddleHub module: {result.hub_dir}")
    if result.onnx:
        print(f"ONNX model: {result.onnx}")
    if result.int8_dir:
        print(f"int8 model (Slim.quant, trained ranges): {result.int8_dir}")


if __name__ == "__main__":
    cli.run(main)
