"""Image augmentations for tf.data pipelines, each a pure TF op seeded explicitly.

Every random op is `op(image, seed, **kwargs)` with `seed` an int32/int64 tensor of shape [2], and
draws only through `tf.random.stateless_*`; an op that needs several draws splits its seed. The
same seed therefore gives the same pixels in eager mode and inside `Dataset.map` (graph mode), on
any host and after a restart, which makes the input stream a function of (run seed, position).

Deriving the seeds (pipeline side): give every example the seed
`tf.random.experimental.stateless_fold_in(run_seed, i)`, with `i` its int64 position in the
repeated stream (`Dataset.enumerate()` after `repeat()`; the result takes the dtype of `i`, so
keep it int64 everywhere), and every batch `stateless_fold_in(mixup_seed, step)`. The draws at a
step then depend on (run seed, step) alone: resuming needs the stream rebuilt at that position
(deterministic shuffle + skip, or a tf.data iterator checkpoint), never an RNG state.

Recommended order:

    ImageNet  decode -> inception_crop -> [randaugment] -> normalize -> batch -> [mixup]
    ImageNet (eval)  decode -> center_crop -> normalize -> batch
    CIFAR     cifar_crop_flip -> normalize -> [cutout] -> batch -> [mixup]
    CIFAR (eval)  normalize -> batch

- Geometry first: crops and flips act on the stored pixels, so `inception_crop` sees the full
  decoded image, and CIFAR's zero padding is black pixels before normalization, as torchvision's
  RandomCrop(padding=4) pads the PIL image before ToTensor/Normalize.
- RandAugment after the crop and before `normalize`: its ops are defined on uint8 intensities
  (solarize thresholds, posterize bits, fill value 128, histograms), and running it on the
  224 x 224 crop rather than the full image is cheaper and is what big_vision does.
- `normalize` last among the per-example ops, since everything before it is defined on uint8
  intensities; batches then leave the pipeline as float32, ready for the model.
- `cutout` after `normalize`, as ESAM's official loader runs it: its zeros are the dataset mean.
- `mixup` after batching, since it mixes examples; it is linear with weights summing to one, so
  mixing normalized images equals normalizing mixed ones, and `label_smoothing` before or after
  it gives the same labels.

Where the RandAugment ops depart from the reference TF implementation (tensorflow/tpu,
big_vision's autoaugment), the reason is written at the op; the magnitude mapping is summed up
above RANDAUGMENT_OPS.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import tensorflow as tf


def _split(seed, num: int = 2):
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


def _to_uint8(x):
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def _resize(image, size, antialias: bool):
    """Bilinear resize that keeps uint8 images uint8 (rounded, not truncated)."""
    out = tf.image.resize(image, size, method="bilinear", antialias=antialias)
    return _to_uint8(out) if image.dtype == tf.uint8 else tf.cast(out, image.dtype)


# --- per-example geometry -------------------------------------------------------------------------


def flip(image, seed):
    """Random horizontal flip."""
    return tf.image.stateless_random_flip_left_right(image, seed)


def cifar_crop_flip(image, seed, pad: int = 4):
    """torchvision RandomCrop(size, padding=pad) + RandomHorizontalFlip: zero pad, crop, flip."""
    crop_seed, flip_seed = _split(seed)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    # Offsets are uniform over the 2 pad + 1 positions per axis, both borders included.
    cropped = tf.image.stateless_random_crop(padded, tf.shape(image), crop_seed)
    return flip(cropped, flip_seed)


def inception_crop(image, seed, size: int = 224, area: tuple[float, float] = (0.08, 1.0),
                   aspect: tuple[float, float] = (3 / 4, 4 / 3), antialias: bool = True):
    """Inception random resized crop to size x size (bilinear), then a random flip.

    antialias=True approximates the PIL bilinear resize behind torchvision's RandomResizedCrop;
    big_vision resizes without it, which is faster and aliases on strong downscaling.
    """
    box_seed, flip_seed = _split(seed)
    begin, box, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4], tf.float32), seed=box_seed,
        min_object_covered=0.0, aspect_ratio_range=aspect, area_range=area, max_attempts=100,
        use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, box)
    crop.set_shape([None, None, image.shape[-1]])
    return flip(_resize(crop, [size, size], antialias), flip_seed)


def center_crop(image, size: int = 224, crop_fraction: float = 0.875, antialias: bool = True):
    """Evaluation crop: shorter side to floor(size / crop_fraction), central size x size window.

    As torchvision's Resize(256) + CenterCrop(224): the longer side is floor(256 * long / short);
    an odd margin leaves the extra pixel on the bottom/right.
    """
    resize_to = int(math.floor(size / crop_fraction))
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    short = tf.minimum(h, w)
    # Integer arithmetic, so the size does not depend on float rounding.
    new_h, new_w = resize_to * h // short, resize_to * w // short
    resized = _resize(image, tf.stack([new_h, new_w]), antialias)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    out = tf.slice(resized, tf.stack([top, left, 0]), tf.stack([size, size, -1]))
    out.set_shape([size, size, image.shape[-1]])
    return out


def normalize(image, mean: Sequence[float], std: Sequence[float]):
    """uint8 -> float32 in [0, 1], then per-channel (x - mean) / std. Float input is taken as [0, 1]."""
    x = tf.cast(image, tf.float32)
    if image.dtype == tf.uint8:
        x = x / 255.0
    return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def cutout(image, seed, size: int = 16, probability: float = 0.5):
    """Cutout (DeVries & Taylor 2017) as ESAM's official loader runs it (davda54/sam's `Cutout`,
    after Normalize): with `probability`, zero one size x size square whose top-left corner is
    uniform over [-size // 2, H - size // 2) x [-size // 2, W - size // 2), clipped at the border,
    so a square near an edge erases less. Zero is the dataset mean once normalised, which is why
    it runs after `normalize`."""
    apply_seed, row_seed, col_seed = _split(seed, 3)
    shape = tf.shape(image)
    h, w, half = shape[0], shape[1], size // 2
    top = tf.random.stateless_uniform([], row_seed, -half, h - half, dtype=tf.int32)
    left = tf.random.stateless_uniform([], col_seed, -half, w - half, dtype=tf.int32)
    rows, cols = tf.range(h)[:, None], tf.range(w)[None, :]
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    # torch.rand() > p skips: the square is drawn with probability p.
    erase = inside & (tf.random.stateless_uniform([], apply_seed) < probability)
    return tf.where(erase[:, :, None], tf.zeros_like(image), image)


# --- batch level ----------------------------------------------------------------------------------


def mixup(images, labels, seed, alpha: float = 0.2):
    """Mixup (Zhang et al. 2018) with one lambda ~ Beta(alpha, alpha) for the batch.

    As big_vision: each example is mixed with its neighbour (the batch rolled by one, so nothing
    is mixed with itself), and lambda is folded to max(lambda, 1 - lambda) so every example stays
    the majority of its own mix instead of vanishing when alpha is small. Images and labels share
    the lambda. Returns (images, labels); lambda is the weight left on each row's own label.
    """
    s1, s2 = _split(seed)
    g1 = tf.random.stateless_gamma([], s1, alpha, dtype=tf.float32)
    g2 = tf.random.stateless_gamma([], s2, alpha, dtype=tf.float32)
    # Both gammas can underflow to 0 for tiny alpha; then there is nothing to mix.
    lam = tf.math.divide_no_nan(g1, g1 + g2)
    lam = tf.where(g1 + g2 > 0, tf.maximum(lam, 1.0 - lam), 1.0)

    def mix(x):
        x = tf.convert_to_tensor(x)
        lam_x = tf.cast(lam, x.dtype)
        return lam_x * x + (1 - lam_x) * tf.roll(x, shift=1, axis=0)

    return mix(images), mix(labels)


def label_smoothing(labels_onehot, eps: float):
    """(1 - eps) * onehot + eps / k over the last axis of k classes."""
    labels = tf.convert_to_tensor(labels_onehot, tf.float32)
    k = tf.cast(tf.shape(labels)[-1], tf.float32)
    return (1.0 - eps) * labels + eps / k


# --- RandAugment ----------------------------------------------------------------------------------
# Ops take (image uint8 [h, w, 3], magnitude, seed) and return uint8 of the same shape. Every
# magnitude-dependent op is the identity at magnitude 0, so M is a strength knob all the way down.

_MAX_LEVEL = 10.0
FILL_VALUE = 128
TRANSLATE_FRACTION = 0.45  # of the image side at M=10: 100.8 px at 224, the reference's 100 px


# Op parameters are computed in float64 and rounded once to float32: tf.data runs the ops as a
# graph, whose optimizer may reassociate float arithmetic, and a one-ulp change in a float32
# parameter moves nearest-neighbour and rounding ties (it did for Rotate in float32). A float64
# difference survives the rounding to float32 only in the rarest cases.


def _level(magnitude):
    return tf.cast(magnitude, tf.float64) / _MAX_LEVEL


def _random_sign(seed):
    return tf.where(tf.random.stateless_uniform([], seed) < 0.5, tf.constant(-1.0, tf.float64), 1.0)


def _blend(degenerate, image, factor):
    """PIL ImageEnhance: degenerate + factor * (image - degenerate), rounded and clipped.

    Factor 1 returns the image exactly (integer values are exact in float32).
    """
    degenerate, x = tf.cast(degenerate, tf.float32), tf.cast(image, tf.float32)
    return _to_uint8(degenerate + tf.cast(factor, tf.float32) * (x - degenerate))


def _enhance_factor(magnitude, seed):
    # timm's "increasing" mapping, 1 + 0.9 (M/10) (+/-), floored at 0.1 as timm does, because
    # magnitudes above 10/0.9 would otherwise give negative factors (inverted images). The
    # reference's 0.1 + 1.8 M/10 is not the identity at M=0 and has no notion of direction.
    return tf.maximum(1.0 + _level(magnitude) * 0.9 * _random_sign(seed), 0.1)


def _transform(image, matrix, interpolation="NEAREST"):
    """Projective warp; output pixel (x, y) samples the input at matrix @ (x, y, 1).

    Nearest sampling as in the reference, so a zero-magnitude warp is exactly the identity;
    pixels mapped from outside the image get FILL_VALUE.
    """
    shape = tf.shape(image)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=tf.cast(tf.stack(matrix)[None], tf.float32),  # from float64
        output_shape=shape[:2], fill_value=tf.constant(FILL_VALUE, tf.float32),
        interpolation=interpolation, fill_mode="CONSTANT")
    return tf.reshape(out[0], shape)


def identity(image, magnitude, seed):
    del magnitude, seed
    return image


def auto_contrast(image, magnitude, seed):
    """Per channel, stretch [min, max] to [0, 255]; a constant channel is left alone."""
    del magnitude, seed
    x = tf.cast(image, tf.float32)
    lo = tf.reduce_min(x, axis=[0, 1])
    hi = tf.reduce_max(x, axis=[0, 1])
    scale = tf.math.divide_no_nan(255.0, hi - lo)
    return tf.where(hi > lo, _to_uint8((x - lo) * scale), image)


def _equalize_channel(channel):
    """PIL ImageOps.equalize on one uint8 channel [h, w]."""
    idx = tf.cast(channel, tf.int32)
    hist = tf.math.bincount(tf.reshape(idx, [-1]), minlength=256, maxlength=256)
    nonzero = tf.boolean_mask(hist, hist > 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
    lut = (tf.cumsum(hist) + step // 2) // tf.maximum(step, 1)
    lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
    # step 0: (almost) a single intensity, which PIL leaves unchanged.
    return tf.where(step > 0, tf.cast(tf.gather(lut, idx), tf.uint8), channel)


def equalize(image, magnitude, seed):
    del magnitude, seed
    channels = tf.unstack(image, num=3, axis=-1)
    return tf.stack([_equalize_channel(c) for c in channels], axis=-1)


def rotate(image, magnitude, seed):
    """Rotate about the centre by (M/10) * 30 degrees, either direction."""
    angle = _level(magnitude) * 30.0 * _random_sign(seed) * (math.pi / 180.0)
    shape = tf.cast(tf.shape(image), tf.float64)
    h, w = shape[0] - 1.0, shape[1] - 1.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    # tf.contrib.image.rotate's matrix: counter-clockwise about ((w-1)/2, (h-1)/2).
    x_offset = (w - (cos * w - sin * h)) / 2.0
    y_offset = (h - (sin * w + cos * h)) / 2.0
    return _transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def solarize(image, magnitude, seed):
    """Invert pixels >= threshold, threshold = 256 - (M/10) * 256 (256 at M=0 inverts nothing).

    The reference maps M to threshold (M/10) * 256, so its strongest setting is the weakest op;
    clipped to [0, 256] for M > 10.
    """
    del seed
    threshold = tf.clip_by_value(256.0 - _level(magnitude) * 256.0, 0.0, 256.0)
    return tf.where(tf.cast(image, tf.float64) < threshold, image, 255 - image)


def color(image, magnitude, seed):
    """Saturation: blend with the grayscale image."""
    gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    return _blend(gray, image, _enhance_factor(magnitude, seed))


def posterize(image, magnitude, seed):
    """Keep the top 8 - int((M/10) * 4) bits (8 at M=0, 4 at M=10), at least 1 for M > 10.

    The reference keeps int((M/10) * 4) bits, which at M=0 zeroes the image.
    """
    del seed
    bits = tf.clip_by_value(8 - tf.cast(tf.floor(_level(magnitude) * 4.0), tf.int32), 1, 8)
    shift = tf.cast(8 - bits, tf.uint8)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def contrast(image, magnitude, seed):
    """Blend with the mean gray level, as PIL ImageEnhance.Contrast.

    The reference degenerates to (pixel count / 256) instead of the mean (a known bug); PIL's
    rounded grayscale mean is used here.
    """
    mean = tf.round(tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image), tf.float32)))
    return _blend(tf.fill(tf.shape(image), mean), image, _enhance_factor(magnitude, seed))


def brightness(image, magnitude, seed):
    """Blend with black."""
    return _blend(tf.zeros_like(image), image, _enhance_factor(magnitude, seed))


def sharpness(image, magnitude, seed):
    """Blend with PIL's SMOOTH filter output, the one-pixel border kept from the image."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    x = tf.cast(image, tf.float32)
    smooth = tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], padding="VALID")[0]
    smooth = tf.pad(_to_uint8(smooth), [[1, 1], [1, 1], [0, 0]])
    border = tf.pad(tf.zeros_like(smooth[1:-1, 1:-1], tf.bool), [[1, 1], [1, 1], [0, 0]],
                    constant_values=True)
    degenerate = tf.where(border, image, smooth)
    return _blend(degenerate, image, _enhance_factor(magnitude, seed))


def shear_x(image, magnitude, seed):
    """x' = x + s y with s = (M/10) * 0.3, either sign; sheared about the top-left corner (PIL)."""
    s = _level(magnitude) * 0.3 * _random_sign(seed)
    return _transform(image, [1.0, s, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image, magnitude, seed):
    s = _level(magnitude) * 0.3 * _random_sign(seed)
    return _transform(image, [1.0, 0.0, 0.0, s, 1.0, 0.0, 0.0, 0.0])


def translate_x(image, magnitude, seed):
    """Shift by (M/10) * TRANSLATE_FRACTION * width pixels, either direction.

    Relative to the image side (timm's translate_pct=0.45) rather than the reference's fixed
    100 px, so one magnitude means the same on 32 px CIFAR and 224 px ImageNet.
    """
    width = tf.cast(tf.shape(image)[1], tf.float64)
    pixels = _level(magnitude) * TRANSLATE_FRACTION * width * _random_sign(seed)
    return _transform(image, [1.0, 0.0, -pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image, magnitude, seed):
    height = tf.cast(tf.shape(image)[0], tf.float64)
    pixels = _level(magnitude) * TRANSLATE_FRACTION * height * _random_sign(seed)
    return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, -pixels, 0.0, 0.0])


# The 14 ops of Cubuk et al. (2020), in the paper's order; each fn(image, magnitude, seed).
# Magnitude M (0..10, may exceed 10), +/- a random sign drawn from the op's seed:
#   Rotate       +/- 30 M/10 degrees about the centre
#   ShearX/Y     +/- 0.3 M/10
#   TranslateX/Y +/- 0.45 M/10 of the width / height (100.8 px at 224)
#   Color, Contrast, Brightness, Sharpness   factor max(0.1, 1 +/- 0.9 M/10)
#   Solarize     threshold clip(256 - 256 M/10, 0, 256)
#   Posterize    bits clip(8 - floor(4 M/10), 1, 8)
#   Identity, AutoContrast, Equalize         no magnitude
# Geometric ops sample nearest-neighbour and fill with 128.
RANDAUGMENT_OPS: dict[str, Callable] = {
    "Identity": identity,
    "AutoContrast": auto_contrast,
    "Equalize": equalize,
    "Rotate": rotate,
    "Solarize": solarize,
    "Color": color,
    "Posterize": posterize,
    "Contrast": contrast,
    "Brightness": brightness,
    "Sharpness": sharpness,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x,
    "TranslateY": translate_y,
}


def randaugment(image, seed, num_ops: int = 2, magnitude: float = 9):
    """RandAugment: num_ops ops drawn uniformly (with replacement), each at `magnitude`.

    Expects an RGB uint8 image [h, w, 3] of any size; returns uint8 of the same shape.
    """
    ops = list(RANDAUGMENT_OPS.values())
    seeds = tf.random.experimental.stateless_split(seed, num=2 * num_ops)
    out = image
    for i in range(num_ops):
        index = tf.random.stateless_uniform([], seeds[2 * i], 0, len(ops), dtype=tf.int32)
        op_seed = seeds[2 * i + 1]
        branches = [lambda op=op, x=out, s=op_seed: op(x, magnitude, s) for op in ops]
        out = tf.switch_case(index, branches)
        # The branches agree on shape only dynamically; restore what the caller knew statically.
        out.set_shape(image.shape)
    return out


# --- composing per-example transforms -------------------------------------------------------------


def _normalize_op(image, seed, mean, std):
    del seed
    return normalize(image, mean, std)


def _center_crop_op(image, seed, **kwargs):
    del seed
    return center_crop(image, **kwargs)


# Per-example ops as fn(image, seed, **kwargs); the deterministic ones ignore the seed.
OPS: dict[str, Callable] = {
    "cifar_crop_flip": cifar_crop_flip,
    "flip": flip,
    "inception_crop": inception_crop,
    "randaugment": randaugment,
    "center_crop": _center_crop_op,
    "normalize": _normalize_op,
    "cutout": cutout,
}


def make_transform(specs: Sequence[str | tuple[str, dict]]) -> Callable:
    """Chain OPS by name into fn(image, seed); op i gets the i-th split of the seed.

        make_transform([("inception_crop", dict(size=224)),
                        ("randaugment", dict(num_ops=2, magnitude=15)),
                        ("normalize", dict(mean=spec.mean, std=spec.std))])

    The split depends on the op's position, so changing the list changes every op's draws.
    """
    chain = []
    for spec in specs:
        name, kwargs = (spec, {}) if isinstance(spec, str) else spec
        if name not in OPS:
            raise ValueError(f"unknown augmentation {name!r}; choose one of {sorted(OPS)}")
        chain.append((OPS[name], dict(kwargs)))

    def transform(image, seed):
        if not chain:
            return image
        seeds = tf.random.experimental.stateless_split(seed, num=len(chain))
        for i, (fn, kwargs) in enumerate(chain):
            image = fn(image, seeds[i], **kwargs)
        return image

    return transform
