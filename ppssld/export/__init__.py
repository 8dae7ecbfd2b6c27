"""Export of a trained (student) model: Paddle Inference, ``_ssld`` weights, PaddleHub, ONNX.

Modules (import them explicitly; nothing heavy is imported here):

* :mod:`ppssld.export.labels`: class-name files (PaddleClas ``class_id_map_file`` or one name a line).
* :mod:`ppssld.export.student`: pick the inference model out of a DistillationModel and load it.
* :mod:`ppssld.export.infer_config`: the ``inference.yml`` every runtime preprocesses from.
* :mod:`ppssld.export.outputs`: what the graph returns (PaddleClas's softmax / sigmoid, or logits) and the scores.
* :mod:`ppssld.export.inference`: the export itself (``export_model``).
* :mod:`ppssld.export.runtime`: the Paddle Inference predictor shared by the CLI and the hub module.
* :mod:`ppssld.export.hub`: PaddleHub module writer and its runtime class.
* :mod:`ppssld.export.onnx`: optional ONNX conversion and an onnxruntime predictor.
"""
