"""Host-side image operations of the streamed pipeline (numpy + OpenCV + simplejpeg; no JAX, so that Grain's
worker processes start fast): JPEG decoding, ImageNet's RandomResizedCrop + flip, the eval resize + centre crop,
and CIFAR's pad-and-crop for small decoded images. Every random choice comes from the `rng` passed in.

Decoder: simplejpeg (libjpeg-turbo), chosen by measurement (benchmarks/input_pipeline.py, docs/performance.md);
other formats (PNG, ...) go through OpenCV.
"""

import math

import numpy as np

IMAGENET_SCALE = (0.1, 1.0)    # ELTH.md section 2 (torchvision's default is 0.08-1)
IMAGENET_RATIO = (0.8, 1.25)


def decode(data: bytes) -> np.ndarray:
    """uint8 [H, W, 3] RGB of an encoded image (JPEG fast path; grayscale becomes 3 channels)."""
    import simplejpeg
    if simplejpeg.is_jpeg(data):
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    import cv2
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # an empty buffer raises instead of returning None
        image = None
    if image is None:
        raise ValueError("not a JPEG, PNG or BMP image, or damaged")
    return image[..., ::-1]  # OpenCV decodes to BGR


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (area averaging when shrinking, as antialiased torchvision resizes)."""
    import cv2
    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator, scale=IMAGENET_SCALE,
                            ratio=IMAGENET_RATIO) -> tuple[int, int, int, int]:
    """(top, left, h, w) of torchvision's RandomResizedCrop: up to 10 tries at a random area and aspect ratio,
    then the centre crop at the nearest allowed aspect ratio."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def train_transform(image: np.ndarray, rng: np.random.Generator, size: int, scale=IMAGENET_SCALE,
                    ratio=IMAGENET_RATIO) -> np.ndarray:
    """RandomResizedCrop to size x size, then a horizontal flip with probability 1/2."""
    top, left, h, w = random_resized_crop_box(image.shape[0], image.shape[1], rng, scale, ratio)
    crop = resize(image[top:top + h, left:left + w], size, size)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def eval_transform(image: np.ndarray, size: int, resize_to: int) -> np.ndarray:
    """Shorter side resized to `resize_to`, then the centre size x size crop (torchvision's eval transform)."""
    h, w = image.shape[:2]
    factor = resize_to / min(h, w)
    h, w = max(size, round(h * factor)), max(size, round(w * factor))
    image = resize(image, h, w)
    top, left = (h - size) // 2, (w - size) // 2
    return image[top:top + size, left:left + size]


def pad_crop_flip(image: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """CIFAR's augmentation for small decoded images: a random crop of the zero-padded image, random flip."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    top, left = rng.integers(0, 2 * pad + 1, size=2)
    crop = padded[top:top + h, left:left + w]
    return crop[:, ::-1] if rng.random() < 0.5 else crop
