"""PaddleClas's ``Slim`` section: quantization-aware training (``Slim.quant``) in ONNX Runtime's int8 scheme."""
