"""The frozen teacher's forward pass in an inference engine (Paddle Inference with oneDNN) or in dygraph."""
