"""PyTorch implementation of the augmentation catalogue in :mod:`raykit.augment`.

Everything runs on whole batches with tensor ops on the images' device (no Python loop over samples):
per-sample random parameters are drawn as tensors from one ``torch.Generator``, consecutive geometric
ops (rotate, shift, shear, zoom) are composed into one affine matrix per sample and resampled once with
``affine_grid``/``grid_sample``, and mixup/cutmix draw one permutation and one ``lam`` per batch. The
kernels are tables in :data:`KERNELS`; the op dispatch is shared (:mod:`raykit.augment_dispatch`).

Typical use in a training loop::

    augmenter = build_augmenter(resolve_ops(spec.augment.preset, spec.augment.ops), num_classes, seed)
    generator = make_generator(device, seed, epoch, rank)      # reseeded every epoch: resumable
    images, targets = augmenter.train_batch(images, labels, generator)
    loss = soft_cross_entropy(model(images), targets)
    ...
    logits = model(augmenter.eval_batch(val_images))
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from raykit.augment import AUGMENT_POLICY_OPS, MAGNITUDE_BINS, SIGNED_POLICY_OPS, policy_magnitudes
from raykit.augment_dispatch import BaseAugmenter, Kernels, jitter_adjustments, policy_pixel_ops
from raykit.backends.torch import augment_color as color
from raykit.backends.torch.augment_boxes import crop_boxes, erase, erase_boxes, resized_crop
from raykit.plots import augment_grid_png


class Augmenter(BaseAugmenter):
    """Applies resolved ops (see :func:`raykit.augment.resolve_ops`) to NCHW float batches with the torch
    kernels (:data:`KERNELS`); the op dispatch is :class:`raykit.augment_dispatch.BaseAugmenter`'s."""

    def __init__(self, ops: list[dict], num_classes: int, seed: int = 0):
        super().__init__(ops, num_classes, KERNELS)
        self.seed = seed

    def generator(self, device: torch.device | str, epoch: int, rank: int) -> torch.Generator:
        """:func:`make_generator` with this augmenter's seed."""
        return make_generator(device, self.seed, epoch, rank)

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a training batch; return ``(images, targets)``.

        ``targets`` is ``labels`` itself unless a mixup/cutmix op fired, then float soft targets of shape
        (N, num_classes) whose rows sum to 1. ``images`` is never modified in place. Every op draws in
        turn from ``generator``.
        """
        return self.augment(images, labels, generator)


def build_augmenter(ops: list[dict], num_classes: int, seed: int) -> Augmenter:
    """An :class:`Augmenter` for ``ops`` (the output of :func:`raykit.augment.resolve_ops`)."""
    return Augmenter(ops, num_classes, seed)


def make_generator(device: torch.device | str, seed: int, epoch: int, rank: int) -> torch.Generator:
    """A generator on ``device`` seeded from (seed, epoch, rank) alone, so that a resumed run replays the
    same augmentation for an epoch without storing generator state, and ranks never share a stream."""
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator(device=torch.device(device))
    return generator.manual_seed((int(state[0]) << 31) ^ int(state[1]))  # < 2**63


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
                       ) -> torch.Tensor:
    """Cross entropy, mean over the batch, for integer class targets (N,) or soft targets (N, C).

    Soft targets get the same label smoothing ``F.cross_entropy`` applies: ``t * (1 - s) + s / C``.
    """
    if not targets.dtype.is_floating_point:
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    log_probs = F.log_softmax(logits.float(), dim=1)
    targets = targets.float()
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / logits.shape[1]
    return -(targets * log_probs).sum(dim=1).mean()


# --------------------------------------------------------------------------------------------------
# Ops with explicit parameters (the random ops draw these, then call them)


def crop(images: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop each sample back to H x W at its ``offsets[n] = (dy, dx)``,
    both in [0, 2 * padding]. Exact: a gather, no interpolation."""
    n, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = offsets[:, 0, None] + torch.arange(height, device=images.device)  # (N, H)
    cols = offsets[:, 1, None] + torch.arange(width, device=images.device)  # (N, W)
    batch = torch.arange(n, device=images.device)[:, None, None]
    # Advanced indices around the channel slice put their dims first: (N, H, W, C).
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def flip(images: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Flip the samples where ``mask`` (bool, (N,)) is true along ``dim`` (-1 left-right, -2 top-bottom)."""
    return torch.where(mask[:, None, None, None], images.flip(dim), images)


def rotation_matrix(degrees: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) output->input pixel maps rotating content counterclockwise by ``degrees``."""
    theta = torch.deg2rad(degrees)
    cos, sin = torch.cos(theta), torch.sin(theta)
    return _matrices([[cos, -sin], [sin, cos]])


def shift_matrix(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) maps moving content ``dx`` px right and ``dy`` px down."""
    one, zero = torch.ones_like(dx), torch.zeros_like(dx)
    return _matrices([[one, zero], [zero, one]], translation=(-dx, -dy))


def shear_matrix(degrees: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) maps of the horizontal shear x' = x + tan(degrees) * y (y down, from the centre)."""
    tan = torch.tan(torch.deg2rad(degrees))
    one, zero = torch.ones_like(tan), torch.zeros_like(tan)
    return _matrices([[one, -tan], [zero, one]])


def vertical_shear_matrix(degrees: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) maps of the vertical shear y' = y + tan(degrees) * x (x right, from the centre)."""
    tan = torch.tan(torch.deg2rad(degrees))
    one, zero = torch.ones_like(tan), torch.zeros_like(tan)
    return _matrices([[one, zero], [-tan, one]])


def zoom_matrix(scale: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) maps scaling content about the centre by ``scale`` (> 1 zooms in)."""
    inverse, zero = 1.0 / scale, torch.zeros_like(scale)
    return _matrices([[inverse, zero], [zero, inverse]])


def _matrices(linear: list[list[torch.Tensor]], translation: tuple | None = None) -> torch.Tensor:
    """Stack per-sample 2x2 parts (and a translation) into (N, 3, 3) homogeneous matrices."""
    zero, one = torch.zeros_like(linear[0][0]), torch.ones_like(linear[0][0])
    tx, ty = translation if translation is not None else (zero, zero)
    rows = [[linear[0][0], linear[0][1], tx], [linear[1][0], linear[1][1], ty], [zero, zero, one]]
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def warp(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Resample ``images`` with per-sample (N, 3, 3) output->input maps in pixel units about the image
    centre (x right, y down); bilinear, zeros outside the image."""
    n, c, height, width = images.shape
    # affine_grid works in [-1, 1] coordinates: conjugate by the pixel scale so that rotations stay
    # rotations on non-square images.
    scale = torch.diag(torch.tensor([width / 2, height / 2, 1.0], device=images.device))
    unscale = torch.diag(torch.tensor([2 / width, 2 / height, 1.0], device=images.device))
    theta = (unscale @ matrices.to(images.device, torch.float32) @ scale)[:, :2, :]
    grid = F.affine_grid(theta.to(images.dtype), [n, c, height, width], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def adjust_brightness(images: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Add ``delta[n]`` to every pixel of sample n."""
    return images + delta.to(images.dtype)[:, None, None, None]


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """x -> (x - mean) * factor[n] + mean, with the mean over each image's channels and pixels."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * factor.to(images.dtype)[:, None, None, None] + mean


def normalize(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """(x - mean) / std per channel; one value is used for every channel."""
    channels = images.shape[1]
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise ValueError(f"augment.ops normalize.{name}: got {list(values)!r} ({len(values)} values) for "
                             f"images with {channels} channels; accepted: 1 value or {channels}")
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device)[None, :, None, None]
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device)[None, :, None, None]
    return (images - mean_t) / std_t


def mixup(images: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    """Mix every sample with its partner ``perm[n]``: ``lam * a + (1 - lam) * b``."""
    return lam * images + (1 - lam) * images[perm]


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box ``(top, bottom, left, right)`` of about (1 - lam) of the image, centred at a uniform
    random pixel and clipped to the image (so it may be smaller). Rows top:bottom, columns left:right."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(round(height * ratio)), int(round(width * ratio))
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, width)
    return top, bottom, left, right


def cutmix(images: torch.Tensor, perm: torch.Tensor, box: tuple[int, int, int, int]) -> tuple[torch.Tensor, float]:
    """Paste ``box`` ``(top, bottom, left, right)`` of every sample's partner ``perm[n]`` into it; return
    the images and ``lam = 1 - box area / image area``, the true kept area even when clipping shrank the box."""
    top, bottom, left, right = box
    height, width = images.shape[-2:]
    mixed = images.clone()
    mixed[:, :, top:bottom, left:right] = images[perm][:, :, top:bottom, left:right]
    return mixed, 1.0 - (bottom - top) * (right - left) / (height * width)


# --------------------------------------------------------------------------------------------------
# Drawing the random parameters


def _draw(function, generator: torch.Generator, *args, **kwargs) -> torch.Tensor:
    """Call a torch sampler on the generator's own device (a CUDA generator only feeds CUDA tensors)."""
    return function(*args, generator=generator, device=generator.device, **kwargs)


def _uniform(generator: torch.Generator, images: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """(N,) float32 uniform in [low, high] on the images' device."""
    return (_draw(torch.rand, generator, len(images)) * (high - low) + low).to(images.device)


# --------------------------------------------------------------------------------------------------
# Kernels: (op, images, generator) -> maps or images; the batch ops also take and return the targets


def _rotate(op: dict, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return rotation_matrix(_uniform(generator, images, -op["degrees"], op["degrees"]))


def _shift(op: dict, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    height, width = images.shape[-2:]
    dx = _uniform(generator, images, -op["width"] * width, op["width"] * width)
    dy = _uniform(generator, images, -op["height"] * height, op["height"] * height)
    return shift_matrix(dx, dy)


def _shear(op: dict, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return shear_matrix(_uniform(generator, images, -op["degrees"], op["degrees"]))


def _zoom(op: dict, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return zoom_matrix(_uniform(generator, images, *op["range"]))


def _random_crop(op: dict, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    offsets = _draw(torch.randint, generator, 0, 2 * op["padding"] + 1, (len(images), 2))
    return crop(images, op["padding"], offsets.to(images.device))


def _flips(dim: int):
    """The kernel flipping along ``dim`` with probability ``p`` per sample."""
    def kernel(op: dict, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return flip(images, (_draw(torch.rand, generator, len(images)) < op["p"]).to(images.device), dim)
    return kernel


def _brightness(op: dict, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return adjust_brightness(images, _uniform(generator, images, -op["delta"], op["delta"]))


def _contrast(op: dict, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return adjust_contrast(images, _uniform(generator, images, *op["range"]))


def _normalize(op: dict, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return normalize(images, op["mean"], op["std"])


def _mix(op: dict, images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator, num_classes: int
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix with probability ``p``; integer labels become soft targets only when it fires."""
    # One 64-bit draw from the torch generator seeds NumPy for the per-batch scalars: torch has no
    # Beta sampler that takes a generator, and the draw keeps the whole stream reproducible.
    rng = np.random.default_rng(int(_draw(torch.randint, generator, 0, 2**62, (1,)).item()))
    if rng.random() >= op["p"]:
        return images, targets
    lam = float(rng.beta(op["alpha"], op["alpha"]))
    perm = _draw(torch.randperm, generator, len(images)).to(images.device)
    soft = targets if targets.dtype.is_floating_point else F.one_hot(targets, num_classes).to(images.dtype)
    if op["op"] == "mixup":
        mixed = mixup(images, perm, lam)
    else:
        mixed, lam = cutmix(images, perm, cutmix_box(*images.shape[-2:], lam, rng))
    return mixed, lam * soft + (1 - lam) * soft[perm]


def _random_resized_crop(op: dict, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return resized_crop(images, crop_boxes(generator, images, op["scale"], op["ratio"]))


def _random_erasing(op: dict, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    boxes = erase_boxes(generator, images, op["scale"], op["ratio"])
    fires = (_draw(torch.rand, generator, len(images)) < op["p"]).to(images.device)
    if op["value"] == "random":  # torchvision's value="random": standard normal noise per pixel and channel
        fill = _draw(torch.randn, generator, images.shape).to(images.device, images.dtype)
    else:
        fill = op["value"]
    return erase(images, boxes * fires[:, None], fill)


# color_jitter's adjustments in their canonical order, each with its factor range for a strength.
JITTER = jitter_adjustments(color)


def check_hue_channels(op: dict, channels: int) -> None:
    """A hue jitter on images that are not RGB: refused, naming the op, the parameter and the value."""
    if op["hue"] > 0 and channels != 3:
        raise ValueError(f"augment.ops color_jitter.hue: got {op['hue']} for images with {channels} channel(s); "
                         "accepted: hue 0 unless the images are RGB (3 channels)")


def _color_jitter(op: dict, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The non-zero adjustments, each with its own factor per sample, in a random order per sample: at each
    position every adjustment is computed and each sample keeps the one its order puts there."""
    check_hue_channels(op, images.shape[1])
    active = [(adjust, _uniform(generator, images, *bounds(op[name])))
              for name, (adjust, bounds) in JITTER.items() if op[name] > 0]
    order = _draw(torch.rand, generator, (len(images), len(active))).argsort(dim=1).to(images.device)
    for position in range(len(active)):
        current = images
        for index, (adjust, factor) in enumerate(active):
            chosen = (order[:, position] == index)[:, None, None, None]
            images = torch.where(chosen, adjust(current, factor), images)
    return images


def apply_policy_ops(images: torch.Tensor, op_index: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Sample n gets op ``AUGMENT_POLICY_OPS[op_index[n]]`` at ``magnitude[n]``: the geometric ones (shears,
    translations, rotation) as one warp, every colour op computed for the batch and kept where chosen."""
    zero = torch.zeros_like(magnitude)
    shear = torch.rad2deg(torch.atan(magnitude))
    maps = torch.stack([shift_matrix(zero, zero), shear_matrix(shear), vertical_shear_matrix(shear),
                        shift_matrix(magnitude.trunc(), zero), shift_matrix(zero, magnitude.trunc()),
                        rotation_matrix(magnitude)], dim=1)  # the first 6 ops of AUGMENT_POLICY_OPS
    geometric = (op_index > 0) & (op_index < maps.shape[1])  # 0 is the identity: left exactly as it is
    chosen_maps = maps[torch.arange(len(images), device=images.device), op_index.clamp(max=maps.shape[1] - 1)]
    images = torch.where(geometric[:, None, None, None], warp(images, chosen_maps), images)
    pixel_ops = policy_pixel_ops(color, magnitude)
    current = images
    for name, adjust in pixel_ops.items():
        chosen = (op_index == AUGMENT_POLICY_OPS.index(name))[:, None, None, None]
        images = torch.where(chosen, adjust(current), images)
    return images


def _policy_draw(generator: torch.Generator, images: torch.Tensor, policy: str, bins: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One op per sample, uniform over AUGMENT_POLICY_OPS, at ``bins`` (None: a uniform bin per sample), its
    magnitude negated with probability 1/2 where the op is signed."""
    n, device = len(images), images.device
    table = torch.tensor(policy_magnitudes(policy, *images.shape[-2:]), device=device)  # (ops, bins)
    op_index = _draw(torch.randint, generator, 0, len(AUGMENT_POLICY_OPS), (n,)).to(device)
    if bins is None:
        bins = _draw(torch.randint, generator, 0, MAGNITUDE_BINS, (n,)).to(device)
    negate = (_draw(torch.rand, generator, n) <= 0.5).to(device)
    signed = torch.tensor([name in SIGNED_POLICY_OPS for name in AUGMENT_POLICY_OPS], device=device)[op_index]
    magnitude = table[op_index, bins]
    return op_index, torch.where(negate & signed, -magnitude, magnitude)


def _randaugment(op: dict, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    bins = torch.full((len(images),), op["magnitude"], device=images.device)
    for _ in range(op["num_ops"]):
        images = apply_policy_ops(images, *_policy_draw(generator, images, "randaugment", bins))
    return images


def _trivialaugment(op: dict, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return apply_policy_ops(images, *_policy_draw(generator, images, "trivialaugment", None))


def run_transform(transform, name: str):
    """The kernel of a user factory's ``transform`` (a callable on the batch: a torchvision.transforms.v2 or
    kornia pipeline, an nn.Module): run with torch's global RNG forked and seeded by one draw from the op's
    generator, so its draws replay on resume and leave the global RNG as it was."""
    if not callable(transform):
        raise TypeError(f"augment.ops {name}: the factory returned {type(transform).__name__}; accepted: a "
                        "callable on the batch (e.g. a torchvision.transforms.v2 pipeline)")

    def kernel(_: dict, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seed = int(_draw(torch.randint, generator, 0, 2**62, (1,)).item())
        with torch.random.fork_rng(devices=[images.device] if images.device.type == "cuda" else []):
            torch.manual_seed(seed)
            return transform(images)
    return kernel


# The torch implementation of every op of the catalogue; one stateful generator feeds the ops in turn.
KERNELS = Kernels(
    "torch", matrix={"rotate": _rotate, "shift": _shift, "shear": _shear, "zoom": _zoom},
    pixel={"random_crop": _random_crop, "hflip": _flips(-1), "vflip": _flips(-2), "brightness": _brightness,
           "contrast": _contrast, "normalize": _normalize, "random_resized_crop": _random_resized_crop,
           "color_jitter": _color_jitter, "randaugment": _randaugment, "trivialaugment": _trivialaugment,
           "random_erasing": _random_erasing},
    batch={"mixup": _mix, "cutmix": _mix}, warp=warp,
    op_rng=lambda generator, index: generator, run_transform=run_transform)


# --------------------------------------------------------------------------------------------------
# Preview


def preview_png(images_nhwc: np.ndarray, ops: list[dict], seed: int, rows: int = 4) -> bytes:
    """A PNG grid of the first ``rows`` images: the original, then 3 augmented versions of each.

    ``images_nhwc`` is float in [0, 1], shape (N, H, W, C); 1 channel is drawn in grayscale. With a
    ``normalize`` op each image is min-max scaled for display; otherwise values are clipped to [0, 1],
    so brightness and contrast changes stay visible.
    """
    images = np.asarray(images_nhwc, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images_nhwc: got shape {images.shape}; accepted: (N, H, W, C)")
    batch = torch.from_numpy(images[:rows]).permute(0, 3, 1, 2).contiguous()
    augmenter = build_augmenter(ops, num_classes=1, seed=seed)
    generator = augmenter.generator("cpu", epoch=0, rank=0)
    labels = torch.zeros(len(batch), dtype=torch.int64)
    columns = [batch] + [augmenter.train_batch(batch, labels, generator)[0] for _ in range(3)]
    rescale = any(op["op"] == "normalize" for op in augmenter.ops)
    return augment_grid_png([c.permute(0, 2, 3, 1).numpy() for c in columns], rescale)
