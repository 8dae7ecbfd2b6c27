"""Paddle-free image transform ops and the checked chain built from a PaddleClas ``transform_ops`` list.

``core`` holds the ``Op`` base and shared helpers, ``basic`` the basic ops, the other modules one
augmentation family each; importing this package registers every op in the one ``TRANSFORMS``
registry. ``compose`` builds the chain; its public names are re-exported here. No paddle import:
the deploy predictor and the PaddleHub module preprocess with these same ops.
"""
from ppssld.data.transforms import (autoaugment, color_jitter, erasing, pad, pca_lighting, randaugment_v2,
                                    randaugment_v3, timm_augment)
from ppssld.data.transforms.compose import (ANY, BYTES, CHW, HWC, MAX_IMAGE_PIXELS, PADDLECLAS_ONLY, Compose,
                                            DecodeImage, ImageDecodeError, Op, as_rgb_array, build_transforms,
                                            check_image_size, decode_image, header_size, parse_number, resize,
                                            validate_transforms)

__all__ = ["ANY", "BYTES", "CHW", "HWC", "MAX_IMAGE_PIXELS", "PADDLECLAS_ONLY", "Compose", "DecodeImage",
           "ImageDecodeError", "Op", "as_rgb_array", "autoaugment", "build_transforms", "check_image_size",
           "color_jitter", "decode_image", "erasing", "header_size", "pad", "parse_number", "pca_lighting",
           "randaugment_v2", "randaugment_v3", "resize", "timm_augment", "validate_transforms"]
