"""Turn a (compressed) gtcompress model into deployable artifacts: ONNX, TensorRT engines,
NVIDIA Triton Inference Server model repositories."""
