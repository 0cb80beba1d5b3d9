"""tf.data augmentations against what each op should do, worked out in numpy on small images."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from looksam.data import augment, pipeline

CIFAR10, IMAGENET = pipeline.spec("cifar10"), pipeline.spec("imagenet2012")

SEEDS = [tf.constant([s, 7 * s + 3], tf.int64) for s in range(40)]
RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (24, 20, 3), dtype=np.uint8)  # non-square, to catch h/w swaps


def np_(x):
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


# --- geometry -------------------------------------------------------------------------------------


def test_cifar_crop_is_a_window_of_the_zero_padded_image():
    x = np.arange(1, 32 * 32 * 3 + 1, dtype=np.int32).reshape(32, 32, 3)  # distinct, none is 0
    padded = np.pad(x, [(4, 4), (4, 4), (0, 0)])
    offsets, flips = set(), set()
    for seed in SEEDS:
        out = np_(augment.cifar_crop_flip(tf.constant(x), seed, pad=4))
        assert out.shape == x.shape
        matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                   if np.array_equal(out, (lambda w, f: w[:, ::-1] if f else w)(
                       padded[dy:dy + 32, dx:dx + 32], f))]
        assert len(matches) == 1, matches
        offsets.add(matches[0][:2])
        flips.add(matches[0][2])
    assert len(offsets) >= 10 and flips == {False, True}
    # Offsets reach both borders of the padded frame somewhere in 0..8, never beyond.
    assert all(0 <= dy <= 8 and 0 <= dx <= 8 for dy, dx in offsets)


def test_cifar_crop_flip_keeps_uint8_and_is_deterministic():
    x = tf.constant(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    a, b = augment.cifar_crop_flip(x, SEEDS[3]), augment.cifar_crop_flip(x, SEEDS[3])
    assert a.dtype == tf.uint8 and a.shape == (32, 32, 3)
    np.testing.assert_array_equal(a, b)


def test_flip_is_a_flip_and_deterministic():
    x = tf.constant(IMAGE)
    seen = set()
    for seed in SEEDS[:20]:
        out = np_(augment.flip(x, seed))
        np.testing.assert_array_equal(out, np_(augment.flip(x, seed)))
        if np.array_equal(out, IMAGE):
            seen.add("same")
        else:
            np.testing.assert_array_equal(out, IMAGE[:, ::-1])
            seen.add("flipped")
    assert seen == {"same", "flipped"}


def test_stateless_ops_ignore_the_global_seed():
    x = tf.constant(IMAGE)
    tf.random.set_seed(1)
    a = augment.randaugment(x, SEEDS[5], num_ops=3, magnitude=9)
    b = augment.inception_crop(x, SEEDS[5], size=16)
    tf.random.set_seed(2)
    np.testing.assert_array_equal(a, augment.randaugment(x, SEEDS[5], num_ops=3, magnitude=9))
    np.testing.assert_array_equal(b, augment.inception_crop(x, SEEDS[5], size=16))


@pytest.mark.parametrize("shape", [(300, 200, 3), (180, 400, 3), (224, 224, 3)])
def test_inception_crop_gives_size_by_size(shape):
    x = tf.constant(RNG.integers(0, 256, shape, dtype=np.uint8))
    for seed in SEEDS[:3]:
        out = augment.inception_crop(x, seed, size=224)
        assert out.shape == (224, 224, 3) and out.dtype == tf.uint8
        np.testing.assert_array_equal(out, augment.inception_crop(x, seed, size=224))


def test_inception_crop_of_a_constant_image_is_constant():
    x = tf.fill([90, 130, 3], tf.constant(77, tf.uint8))
    np.testing.assert_array_equal(augment.inception_crop(x, SEEDS[1], size=32), np.full((32, 32, 3), 77))


def coordinate_image(h, w):
    """float32 [h, w, 3]: channel 0 is the 1-based row, channel 1 the 1-based column."""
    rows, cols = np.mgrid[1:h + 1, 1:w + 1].astype(np.float32)
    return np.stack([rows, cols, np.zeros_like(rows)], -1)


@pytest.mark.parametrize("shape", [(60, 90), (90, 60), (64, 64), (40, 120)])
def test_inception_crop_boxes_have_the_inception_area_and_aspect_ranges(shape):
    """The standard Inception crop (Szegedy et al. 2015; torchvision's RandomResizedCrop): a box of
    8% to 100% of the image area, aspect ratio w / h in [3/4, 4/3], inside the image.

    The box is read back from the output of a coordinate-coded image: every crop here is smaller
    than 128 on both sides, so the resize to 128 only upsamples, and a linear ramp upsampled with
    positive weights that sum to one keeps its end values (the edge output pixels see one input
    pixel). Zero padding would show as values below 1. The width is a whole number of pixels,
    round(h * aspect), so w / h can pass the aspect limits by up to 0.5 / h.
    """
    H, W = shape
    image = tf.constant(coordinate_image(H, W))
    crop = tf.function(lambda seed: augment.inception_crop(image, seed, size=128))
    areas, aspects, flips, whole = [], [], set(), 0
    for s in range(200):
        out = np_(crop(tf.constant([s, 7 * s + 3], tf.int64)))
        assert out.shape == (128, 128, 3)
        r, c = out[..., 0], out[..., 1]
        # An axis-aligned box: rows vary only down the image, columns only across it.
        assert np.abs(r - r[:, :1]).max() < 1e-3 and np.abs(c - c[:1]).max() < 1e-3
        ends = np.array([r.min(), r.max(), c.min(), c.max()], np.float64)
        assert np.abs(ends - np.round(ends)).max() < 1e-3, ends
        top, bottom, left, right = np.round(ends).astype(int)
        assert 1 <= top <= bottom <= H and 1 <= left <= right <= W  # inside the image
        h, w = bottom - top + 1, right - left + 1
        flipped = c[0, 0] > c[0, -1]
        assert np.array_equal(np.round(c[0, 0]), right if flipped else left)
        flips.add(bool(flipped))
        if (h, w) == (H, W):
            # TF's sampler falls back to the whole image after 100 rejected boxes (allowed, rare).
            whole += 1
            continue
        assert 8 * H * W <= 100 * h * w <= 100 * H * W, (h, w)  # area fraction in [0.08, 1]
        assert 0.75 * h - 0.5 <= w <= 4 / 3 * h + 0.5, (h, w)  # w = round(h * aspect)
        areas.append(h * w / (H * W))
        aspects.append(w / h)
    assert whole <= 4 and flips == {False, True}
    # The sampled boxes reach both ends of the ranges (where the image's shape allows them).
    assert min(areas) < 0.1 and min(aspects) < 0.78 and max(aspects) > 1.3
    if H <= 1.5 * W and W <= 1.5 * H:
        assert max(areas) > 0.75


@pytest.mark.parametrize("transpose", [False, True])
def test_center_crop_without_resize_is_the_central_window(transpose):
    x = RNG.integers(0, 256, (256, 400, 3), dtype=np.uint8)  # shorter side already 224 / 0.875
    want = x[16:240, 88:312]  # (256 - 224) / 2, (400 - 224) / 2
    if transpose:
        x, want = x.transpose(1, 0, 2), want.transpose(1, 0, 2)
    out = augment.center_crop(tf.constant(x))
    assert out.shape == (224, 224, 3) and out.dtype == tf.uint8
    np.testing.assert_array_equal(out, want)


def test_center_crop_halving_a_block_image():
    # Each 2x2 block is constant, so halving 512x1024 to 256x512 with bilinear sampling at the
    # block centres returns the blocks; the crop is then rows 16:240, cols (512 - 224) / 2 = 144.
    small = RNG.integers(0, 256, (256, 512, 3), dtype=np.uint8)
    x = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    out = augment.center_crop(tf.constant(x), size=224, crop_fraction=0.875, antialias=False)
    np.testing.assert_array_equal(out, small[16:240, 144:368])
    assert augment.center_crop(tf.constant(x)).shape == (224, 224, 3)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagenet2012"])
def test_normalize_matches_numpy(name):
    mean, std = pipeline.spec(name).mean, pipeline.spec(name).std
    out = augment.normalize(tf.constant(IMAGE), mean, std)
    assert out.dtype == tf.float32
    want = (IMAGE / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_dataset_statistics():
    # The values torchvision-based SAM/ESAM code normalises with.
    stats = {name: (pipeline.spec(name).mean, pipeline.spec(name).std)
             for name in ("cifar10", "cifar100", "imagenet2012")}
    assert stats["cifar10"] == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert stats["cifar100"] == ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    assert stats["imagenet2012"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


# --- Cutout ---------------------------------------------------------------------------------------


def _erased(out):
    """The erased pixels of a cutout of an all-ones image: a boolean [h, w] mask."""
    zeros = np.asarray(out) == 0
    assert (zeros == zeros[..., :1]).all()  # every channel of a pixel together
    return zeros[..., 0]


def test_cutout_erases_one_square_clipped_at_the_border():
    """davda54/sam's Cutout: the corner is uniform over [-8, h - 8) x [-8, w - 8) for size 16, so
    the erased block is a rectangle of side min(h, c + 16) - max(0, c) per axis: 8..16 pixels.
    Over 400 draws on a 24 x 20 image: every block has such sides, blocks touching each border
    occur, and the mean side per axis is the one worked out by hand below."""
    image = tf.ones([24, 20, 3], tf.float32)
    sides = {0: [], 1: []}
    clipped = set()
    for s in range(400):
        mask = _erased(augment.cutout(image, tf.constant([s, 11], tf.int64), size=16, probability=1.0))
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert mask.sum() == len(rows) * len(cols)  # one solid rectangle
        assert (np.diff(rows) == 1).all() and (np.diff(cols) == 1).all()
        for axis, idx, n in ((0, rows, 24), (1, cols, 20)):
            sides[axis].append(len(idx))
            if idx[0] == 0 and len(idx) < 16:
                clipped.add((axis, "start"))
            if idx[-1] == n - 1 and len(idx) < 16:
                clipped.add((axis, "end"))
    assert clipped == {(0, "start"), (0, "end"), (1, "start"), (1, "end")}

    def mean_side(n, size=16):  # E[min(n, c + size) - max(0, c)], c uniform on [-size//2, n - size//2)
        corners = range(-(size // 2), n - size // 2)
        return np.mean([min(n, c + size) - max(0, c) for c in corners])

    for axis, n in ((0, 24), (1, 20)):
        assert set(sides[axis]) <= set(range(8, 17))
        assert abs(np.mean(sides[axis]) - mean_side(n)) < 0.5  # std of the mean is about 0.12


def test_cutout_applies_at_its_probability_and_is_deterministic_per_seed():
    image = tf.ones([8, 8, 3], tf.float32)
    applied = [bool(_erased(augment.cutout(image, tf.constant([s, 5], tf.int64), size=4,
                                           probability=0.5)).any()) for s in range(1000)]
    assert abs(np.mean(applied) - 0.5) < 0.05  # 3.2 standard errors
    seed = tf.constant([3, 4], tf.int64)
    np.testing.assert_array_equal(augment.cutout(image, seed, 4, 0.7), augment.cutout(image, seed, 4, 0.7))
    never = [augment.cutout(image, tf.constant([s, 5], tf.int64), size=4, probability=0.0) for s in range(50)]
    assert all((np.asarray(x) == 1).all() for x in never)


# --- batch level ----------------------------------------------------------------------------------


def test_mixup_mixes_images_and_labels_with_one_lambda():
    b, k = 6, 8
    classes = np.array([3, 0, 7, 5, 1, 6])  # distinct, so each row names its partner
    x = RNG.normal(size=(b, 5, 4, 3)).astype(np.float32)
    y = np.eye(k, dtype=np.float32)[classes]
    lams = []
    for seed in SEEDS[:10]:
        images, labels = augment.mixup(tf.constant(x), tf.constant(y), seed, alpha=0.2)
        images, labels = np_(images), np_(labels)
        np.testing.assert_allclose(labels.sum(-1), 1.0, atol=1e-6)
        lam = labels[np.arange(b), classes]  # weight left on each row's own class
        np.testing.assert_allclose(lam, lam[0], atol=1e-6)
        lam = float(lam[0])
        assert 0.0 <= lam <= 1.0
        lams.append(lam)
        for i in range(b):
            others = [c for c in np.flatnonzero(labels[i] > 1e-7) if c != classes[i]]
            if lam == 1.0:  # the Beta draw can round to 1 in float32; nothing is mixed in
                assert not others
                np.testing.assert_allclose(images[i], x[i], atol=1e-6)
                continue
            (partner_class,) = others
            j = int(np.flatnonzero(classes == partner_class)[0])
            assert j != i
            np.testing.assert_allclose(labels[i, partner_class], 1 - lam, atol=1e-6)
            np.testing.assert_allclose(images[i], lam * x[i] + (1 - lam) * x[j], atol=1e-5)
    assert len({round(v, 6) for v in lams}) >= 5


def test_mixup_lambda_follows_the_beta_distribution():
    # Beta(1, 1) is uniform; folded to max(lam, 1 - lam) it is uniform on [0.5, 1], mean 0.75,
    # standard deviation 0.144 / sqrt(400) = 0.007 for the sample mean.
    x, y = tf.zeros([2, 1, 1, 1]), tf.eye(2)
    lams = np.array([float(augment.mixup(x, y, tf.constant([s, 1]), alpha=1.0)[1][0, 0]) for s in range(400)])
    assert lams.min() >= 0.5 and lams.max() <= 1.0
    assert abs(lams.mean() - 0.75) < 0.03


def test_label_smoothing():
    y = tf.one_hot([2, 0], 10)
    out = np_(augment.label_smoothing(y, 0.1))
    want = np.full((2, 10), 0.01)
    want[0, 2] = want[1, 0] = 0.91
    np.testing.assert_allclose(out, want, atol=1e-7)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-6)


# --- RandAugment ----------------------------------------------------------------------------------


def test_randaugment_has_the_fourteen_ops():
    assert sorted(augment.RANDAUGMENT_OPS) == sorted([
        "Identity", "AutoContrast", "Equalize", "Rotate", "Solarize", "Color", "Posterize",
        "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY"])


@pytest.mark.parametrize("name", sorted(augment.RANDAUGMENT_OPS))
def test_each_op_keeps_shape_and_dtype(name):
    for magnitude in (0, 5, 10, 15):
        out = augment.RANDAUGMENT_OPS[name](tf.constant(IMAGE), magnitude, SEEDS[0])
        assert out.shape == IMAGE.shape and out.dtype == tf.uint8, (name, magnitude)


@pytest.mark.parametrize("name", ["Identity", "Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY",
                                  "Color", "Contrast", "Brightness", "Sharpness", "Solarize",
                                  "Posterize"])
def test_magnitude_zero_is_the_identity(name):
    """Exactly, pixel for pixel, eager and traced (as tf.data runs them). By construction: the
    blend ops (Color, Contrast, Brightness, Sharpness) compute d + 1.0 * (x - d) on whole numbers,
    exact in float32; the warps (Rotate, Shear, Translate) build the identity matrix (angle, shear
    and shift are +/-0, so cos = 1, sin = 0 and every offset is 0) and sample nearest-neighbour;
    Solarize's threshold is 256 and Posterize keeps 8 bits."""
    op = augment.RANDAUGMENT_OPS[name]
    traced = tf.function(lambda x, s: op(x, 0, s))
    images = [IMAGE, RNG.integers(0, 256, (33, 17, 3), dtype=np.uint8),  # odd sides: Rotate's centre
              RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)]
    for x in images:
        for seed in SEEDS[:8]:  # both signs of the random direction
            np.testing.assert_array_equal(op(tf.constant(x), 0, seed), x)
            np.testing.assert_array_equal(traced(tf.constant(x), seed), x)


@pytest.mark.parametrize("name", ["Rotate", "TranslateX", "TranslateY", "ShearX", "ShearY"])
def test_geometric_ops_move_pixels_at_magnitude_ten(name):
    out = np_(augment.RANDAUGMENT_OPS[name](tf.constant(IMAGE), 10, SEEDS[0]))
    assert (out != IMAGE).mean() > 0.5
    assert (out == 128).all(-1).any()  # some pixels come from outside the image: fill value


def test_translate_x_shifts_by_045_of_the_width_with_fill_128():
    x = RNG.integers(0, 128, (16, 20, 3), dtype=np.uint8)  # < 128, so the fill is unambiguous
    seen = set()
    for seed in SEEDS[:10]:
        out = np_(augment.RANDAUGMENT_OPS["TranslateX"](tf.constant(x), 10, seed))
        d = 9  # 0.45 * 20
        right = np.concatenate([np.full((16, d, 3), 128), x[:, :-d]], axis=1)
        left = np.concatenate([x[:, d:], np.full((16, d, 3), 128)], axis=1)
        assert np.array_equal(out, right) or np.array_equal(out, left)
        seen.add(np.array_equal(out, right))
    assert seen == {True, False}


def test_rotate_by_30_degrees_keeps_the_centre():
    # A square of odd side rotated about its centre pixel keeps that pixel.
    x = RNG.integers(0, 256, (21, 21, 3), dtype=np.uint8)
    out = np_(augment.RANDAUGMENT_OPS["Rotate"](tf.constant(x), 10, SEEDS[0]))
    np.testing.assert_array_equal(out[10, 10], x[10, 10])
    assert (out[0, 0] == 128).all() and (out[0, -1] == 128).all()  # corners leave the frame


def test_solarize_and_posterize_at_magnitude_ten():
    x = tf.constant(IMAGE)
    np.testing.assert_array_equal(augment.RANDAUGMENT_OPS["Solarize"](x, 10, SEEDS[0]), 255 - IMAGE)
    half = np_(augment.RANDAUGMENT_OPS["Solarize"](x, 5, SEEDS[0]))
    np.testing.assert_array_equal(half, np.where(IMAGE < 128, IMAGE, 255 - IMAGE))
    np.testing.assert_array_equal(augment.RANDAUGMENT_OPS["Posterize"](x, 10, SEEDS[0]), IMAGE & 0xF0)


def test_brightness_factor_is_one_plus_or_minus_point_nine_at_magnitude_ten():
    seen = set()
    for seed in SEEDS[:10]:
        out = np_(augment.RANDAUGMENT_OPS["Brightness"](tf.constant(IMAGE), 10, seed))
        matched = [f for f in (0.1, 1.9) if np.abs(out - np.clip(np.round(IMAGE * f), 0, 255)).max() <= 1]
        assert len(matched) == 1
        seen.add(matched[0])
    assert seen == {0.1, 1.9}


def test_autocontrast_stretches_each_channel():
    x = RNG.integers(50, 201, (16, 16, 3), dtype=np.uint8)
    x[0, 0], x[0, 1] = 50, 200
    out = np_(augment.RANDAUGMENT_OPS["AutoContrast"](tf.constant(x), 0, SEEDS[0])).astype(float)
    np.testing.assert_allclose(out, np.round((x - 50.0) * 255 / 150), atol=1)


def test_equalize():
    # A flat histogram is already equalized; two equally common levels go to the extremes (PIL).
    flat = np.stack([RNG.permutation(256).reshape(16, 16) for _ in range(3)], -1).astype(np.uint8)
    np.testing.assert_array_equal(augment.RANDAUGMENT_OPS["Equalize"](tf.constant(flat), 0, SEEDS[0]), flat)
    two = np.where(RNG.permutation(1024).reshape(32, 32, 1) < 512, 100, 101).repeat(3, -1).astype(np.uint8)
    out = np_(augment.RANDAUGMENT_OPS["Equalize"](tf.constant(two), 0, SEEDS[0]))
    np.testing.assert_array_equal(out, np.where(two == 100, 0, 255))


def test_randaugment_is_deterministic_per_seed():
    x = tf.constant(IMAGE)
    outs = [np_(augment.randaugment(x, seed, num_ops=2, magnitude=9)) for seed in SEEDS[:8]]
    for seed, out in zip(SEEDS[:8], outs, strict=True):
        assert out.shape == IMAGE.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, augment.randaugment(x, seed, num_ops=2, magnitude=9))
    assert len({o.tobytes() for o in outs}) >= 4


def test_randaugment_in_dataset_map_matches_eager():
    images = RNG.integers(0, 256, (4, 24, 20, 3), dtype=np.uint8)
    base = tf.constant([11, 12], tf.int64)
    seed_of = lambda i: tf.random.experimental.stateless_fold_in(base, i)
    ds = tf.data.Dataset.from_tensor_slices(images).enumerate().map(
        lambda i, x: augment.randaugment(x, seed_of(i), num_ops=2, magnitude=15))
    assert ds.element_spec.shape == (24, 20, 3) and ds.element_spec.dtype == tf.uint8
    first, second = list(ds.as_numpy_iterator()), list(ds.as_numpy_iterator())
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        np.testing.assert_array_equal(a, b)
        eager = augment.randaugment(tf.constant(images[i]), seed_of(tf.constant(i, tf.int64)), 2, 15)
        np.testing.assert_array_equal(a, eager)


@pytest.mark.parametrize("name", sorted(augment.RANDAUGMENT_OPS))
def test_each_op_gives_the_same_pixels_in_graph_and_eager_mode(name):
    # tf.data traces the ops into a graph; a reassociated float parameter would move
    # nearest-neighbour ties and make a restarted (or eager, debugging) run see other pixels.
    op = augment.RANDAUGMENT_OPS[name]
    images = [RNG.integers(0, 256, shape, dtype=np.uint8) for shape in [(24, 20, 3), (32, 32, 3)]]
    for magnitude in (9, 15):
        graph = tf.function(lambda x, s, m=magnitude: op(x, m, s))
        for x in images:
            for seed in SEEDS[:4]:
                want = op(tf.constant(x), magnitude, seed)
                np.testing.assert_array_equal(graph(tf.constant(x), seed), want)


# --- composition ----------------------------------------------------------------------------------


def test_make_transform_chains_ops_with_split_seeds():
    transform = augment.make_transform([
        ("inception_crop", dict(size=32)),
        ("randaugment", dict(num_ops=2, magnitude=15)),
        ("normalize", dict(mean=IMAGENET.mean, std=IMAGENET.std)),
    ])
    x = tf.constant(RNG.integers(0, 256, (60, 45, 3), dtype=np.uint8))
    out = transform(x, SEEDS[2])
    assert out.shape == (32, 32, 3) and out.dtype == tf.float32
    np.testing.assert_array_equal(out, transform(x, SEEDS[2]))
    assert not np.array_equal(out, transform(x, SEEDS[3]))

    ds = tf.data.Dataset.from_tensors(x).repeat(2).enumerate().map(
        lambda i, im: transform(im, tf.random.experimental.stateless_fold_in(SEEDS[2], i)))
    assert ds.element_spec.shape == (32, 32, 3)
    np.testing.assert_array_equal(list(ds.as_numpy_iterator()), list(ds.as_numpy_iterator()))


def test_make_transform_cifar_and_eval():
    x = tf.constant(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    train = augment.make_transform(["cifar_crop_flip",
                                    ("normalize", dict(mean=CIFAR10.mean, std=CIFAR10.std))])
    assert train(x, SEEDS[0]).shape == (32, 32, 3)
    big = tf.constant(RNG.integers(0, 256, (256, 300, 3), dtype=np.uint8))
    evaluate = augment.make_transform([("center_crop", {}),
                                       ("normalize", dict(mean=IMAGENET.mean, std=IMAGENET.std))])
    mean, std = IMAGENET.mean, IMAGENET.std
    want = (np_(big)[16:240, 38:262] / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(evaluate(big, SEEDS[0]), want, atol=1e-5)


def test_make_transform_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown augmentation 'gridmask'"):
        augment.make_transform(["gridmask"])
