"""Probes of the RoI pooling exercise."""
import numpy as np

from ..verify import Probe


def _ints(rng, low, high, n=2):
    return [int(v) for v in rng.integers(low, high, n)]


def _image(rng, dtype):
    return rng.normal(size=(int(rng.integers(2, 4)), int(rng.integers(1, 4)),
                            *_ints(rng, 5, 12))).astype(dtype)


def _boxes(rng, x, k, scale, grid=None, shift=0.0):
    """``(k, 5)`` boxes on ``x``'s maps seen at ``scale``: sides from -1 to 9 feature
    pixels, a third of them under 1.5 (some reversed, many under a pixel), corners from
    3 pixels before the map to 1 past it (some boxes wholly outside); with ``grid``,
    corners on multiples of it plus ``shift``."""
    n, _, h, w = x.shape
    xy = rng.uniform(-3, [w + 1, h + 1], (k, 2))
    tiny = rng.random((k, 1)) < 1 / 3
    sides = np.where(tiny, rng.uniform(-0.5, 1.5, (k, 2)), rng.uniform(-1, 9, (k, 2)))
    corners = np.concatenate([xy, xy + sides], 1)
    if grid:
        corners = np.round(corners / grid) * grid + shift
    return np.concatenate([rng.integers(0, n, (k, 1)), corners / scale], 1).astype(x.dtype)


def _counts(rois, n):
    """Boxes per image for the list format: ``rois`` sorted by image, some images empty."""
    return dict(rois=rois[np.argsort(rois[:, 0], kind="stable"), 1:],
                counts=[int(c) for c in np.bincount(rois[:, 0].astype(int), minlength=n)])


def _pool(rng, dtype=np.float64, grid=None, shift=0.0, listed=False, smallest=1):
    x = _image(rng, dtype)
    k, size = int(rng.integers(12, 20)), _ints(rng, smallest, 4)
    size = size[:1] * 2 if listed else size  # the list probe passes an int output_size
    # a power of 2 keeps the corners on the grid exact, so half-way rounding shows
    scale = float(2.0 ** rng.integers(-4, 2)) if grid else float(rng.uniform(0.3, 1.5))
    rois = _boxes(rng, x, k, scale, grid, shift)
    inputs = dict(x=x, rois=rois, size=size, scale=scale,
                  g=rng.normal(size=(k, x.shape[1], *size)).astype(dtype))
    return {**inputs, **_counts(rois, x.shape[0])} if listed else inputs


def _align(rng, ratio, dtype=np.float64, grid=None, listed=False):
    x = _image(rng, dtype)
    k, size = int(rng.integers(8, 14)), _ints(rng, 1, 4)
    scale = float(2.0 ** rng.integers(-2, 1)) if grid else float(rng.uniform(0.3, 1.5))
    rois = _boxes(rng, x, k, scale, grid)
    inputs = dict(x=x, rois=rois, size=size, scale=scale, ratio=ratio, aligned=bool(rng.integers(2)),
                  g=rng.normal(size=(k, x.shape[1], *size)).astype(dtype))
    return {**inputs, **_counts(rois, x.shape[0])} if listed else inputs


def _iou(rng):
    """Two box sets sharing a box and a zero-area box (IoU 1, and 0 / 0 = nan)."""
    def boxes(n):
        xy = rng.uniform(0, 8, (n, 2))
        return np.concatenate([xy, xy + rng.uniform(0, 6, (n, 2))], 1)
    b1, b2 = boxes(int(rng.integers(1, 7))), boxes(int(rng.integers(1, 7)))
    flat = np.array([[1.0, 2.0, 1.0, 5.0]])
    return np.concatenate([b1, flat]), rng.permutation(np.concatenate([b2, b1[:1], flat]))


_POOL = """
x.requires_grad_()
y = roi_pool(x, rois, tuple(size), scale)
result = [y, torch.autograd.grad(y, x, g)]
"""

_ALIGN = """
x.requires_grad_()
result = []
for aligned in (False, True):
    y = roi_align(x, {boxes}, tuple(size), scale, ratio, aligned)
    result += [y, torch.autograd.grad(y, x, g)]
"""

PROBES = {
    "roi_pool": [
        Probe(_POOL, lambda rng: _pool(rng, grid=1, shift=0.5, smallest=2)),  # every corner at .5
        Probe("""
x.requires_grad_()
y = roi_pool(x, list(rois.split(counts)), size[0], scale)
result = [y, torch.autograd.grad(y, x, g),
          roi_pool(x, x.new_zeros(0, 5), tuple(size), scale)]
""", lambda rng: _pool(rng, listed=True)),
        Probe(_POOL, lambda rng: _pool(rng, np.float32, grid=0.25)),
    ],
    "roi_align": [
        Probe(_ALIGN.format(boxes="rois"), lambda rng: _align(rng, int(rng.integers(1, 4)))),
        Probe(_ALIGN.format(boxes="list(rois.split(counts))"),
              lambda rng: _align(rng, int(rng.integers(-2, 1)), grid=0.25, listed=True)),
        # float32: the tests' tolerance
        Probe("result = roi_align(x, rois, tuple(size), scale, ratio, aligned)",
              lambda rng: _align(rng, int(rng.integers(-1, 4)), np.float32), atol=1e-5),
    ],
    "box_iou": [
        Probe("result = [box_iou(b1, b2), box_iou(b2, b1[:0])]",
              lambda rng: dict(zip(["b1", "b2"], _iou(rng)))),
        # integer boxes give an IoU of the default dtype
        Probe("result = [box_iou(b1, b2), box_iou(i1, i2)]", lambda rng: {
            **{k: b.astype(np.float32) for k, b in zip(["b1", "b2"], _iou(rng))},
            **{k: np.round(b * 2).astype(np.int64) for k, b in zip(["i1", "i2"], _iou(rng))}}),
    ],
}
