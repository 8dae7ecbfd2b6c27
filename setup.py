"""ppssld: SSLD distillation for PaddleClas backbones.

The Paddle build is the user's choice and is not a requirement here:
``pip install paddlepaddle==3.3.1`` (CPU) or the ``paddlepaddle-gpu`` wheel for your CUDA.
"""
from setuptools import find_packages, setup

setup(
    name="ppssld",
    version="0.1.0",
    description="SSLD knowledge distillation for PaddleClas backbones",
    packages=find_packages(include=["ppssld", "ppssld.*"]),
    python_requires=">=3.8",
    install_requires=[
        "paddleclas==2.6.0",
        "numpy==1.24.4",            # paddleclas 2.6.0 pins it; everything else must fit beside it
        "opencv-python<=4.6.0.66",
        "pyyaml>=5.4",
        "Pillow",
        "tqdm",
        "visualdl",
        "matplotlib",
        "scikit-learn",            # ships the 8x8 digits set used by tools/prepare_data.py
        "imagehash==4.3.2",        # near-duplicate removal in tools/select_unlabeled.py
        "PyWavelets<1.6",          # imagehash dependency; 1.6+ needs numpy>=1.25
        "psutil",
        "safetensors",             # weights without pickle (ppssld.utils.safetensors_io)
        "faiss-cpu==1.8.0.post1",  # mining's near-duplicate index (ppssld.mining.dedup.index); paddleclas brings
                                   # the same version, declared here because ppssld imports it itself
    ],
    extras_require={
        "test": ["pytest", "pytest-timeout"],
        # PaddleHub 2.4.0 imports beside paddle 3.3.1 only with these pins, and with
        # PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python set before paddle is imported
        "hub": ["paddlehub==2.4.0", "huggingface_hub<0.24", "aistudio-sdk<0.2", "pyarrow<15",
                "datasets<2.20", "gradio<5"],
        # paddle2onnx 2.x reads Paddle 3.x's inference.json; onnxruntime.quantization (int8, deploy/slim)
        # imports ml_dtypes, which onnxruntime does not declare
        "onnx": ["paddle2onnx==2.1.0", "onnxruntime==1.32.0", "ml_dtypes==0.5.4"],
    },
)
