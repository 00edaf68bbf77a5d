"""Time the data transformer's augmentation on one batch of 64 x 3 x 32 x 32 uint8 records.

    python benchmarks/augment.py [--calls 200] [--only NAME --batches N]

Prints ms per batch (best of 5 runs of ``--calls`` calls, after warm-up) for Caffe's part
(crop 28 + mirror + mean/scale), each augmentation step added alone, the full pipeline
(scale/rotation, HSV jitter of S, V and H, fancy-PCA lighting, crop, mirror, mean/std), and
the full pipeline as a ratio of Caffe's part.  It also times Pillow doing the rotation and
zoom (``Image.transform`` with an affine map, bilinear, per image and channel) against the
Numba kernel.  ``--only NAME --batches N`` transforms N batches with one configuration and
exits (for timing whole processes, e.g. with /usr/bin/time).
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CAFFE = "crop_size: 28 mirror: true mean_value: 125 mean_value: 123 mean_value: 114 scale: 0.0167"
GEOMETRY = "random_scale_min: 0.9 random_scale_max: 1.1 max_rotation: 15"
HSV = "jitter_saturation: true jitter_value: true jitter_hue: true"
CONFIGS = {
    "caffe": CAFFE,
    "geometry": f"{CAFFE} {GEOMETRY}",
    "hsv": f"{CAFFE} {HSV}",
    "pca": f'{CAFFE} pca_file: "{{pca}}"',
    "std": "crop_size: 28 mirror: true mean_value: 125 mean_value: 123 mean_value: 114 "
           "std_value: 63 std_value: 62 std_value: 66",
    "full": f'{CAFFE} {GEOMETRY} {HSV} pca_file: "{{pca}}" std_value: 63 std_value: 62 std_value: 66',
}
CONFIGS["full"] = CONFIGS["full"].replace(" scale: 0.0167", "")


def timeit(fn, calls):
    for _ in range(5):
        fn()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e3


def make_transformer(name, pca_path):
    from google.protobuf import text_format

    from pycaffe_lite.data.transformer import DataTransformer
    from pycaffe_lite.layer import TRAIN
    from pycaffe_lite.proto import caffe_pb2

    tp = text_format.Parse(CONFIGS[name].replace("{pca}", pca_path), caffe_pb2.TransformationParameter())
    return DataTransformer(tp, TRAIN, (3, 32, 32))


def pillow_warp(batch, mats, out):
    """The same affine resampling with Pillow, one image channel at a time ('F' mode, bilinear)."""
    from PIL import Image

    for n in range(batch.shape[0]):
        m = tuple(mats[n])
        for c in range(batch.shape[1]):
            img = Image.fromarray(batch[n, c].astype(np.float32), mode="F")
            # Pillow samples at pixel centres: shift by half a pixel on both sides of the map
            a, b, tx, d, e, ty = m
            tx2 = tx - 0.5 * (a + b) + 0.5
            ty2 = ty - 0.5 * (d + e) + 0.5
            out[n, c] = np.asarray(img.transform(img.size, Image.Transform.AFFINE, (a, b, tx2, d, e, ty2),
                                                 resample=Image.Resampling.BILINEAR))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--only", choices=sorted(CONFIGS))
    ap.add_argument("--batches", type=int, default=1000)
    args = ap.parse_args()

    from pycaffe_lite.data.mean import save_mean
    from pycaffe_lite.data.transformer import warp_matrices
    from pycaffe_lite.io.arrays import array_to_blobproto
    from pycaffe_lite.kernels.augment import affine_warp
    from pycaffe_lite.rng import set_random_seed

    set_random_seed(0)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (64, 3, 32, 32), dtype=np.uint8)
    tmp = tempfile.mkdtemp()
    pca_path = os.path.join(tmp, "pca.binaryproto")
    # AlexNet's published ImageNet eigenvalues/eigenvectors (RGB, pixels in [0, 1])
    eigval = [0.2175, 0.0188, 0.0045]
    eigvec = [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
    save_mean(array_to_blobproto(np.vstack([eigval, eigvec])), pca_path)

    if args.only:
        t = make_transformer(args.only, pca_path)
        out = np.empty(t.output_shape(64), np.float32)
        for _ in range(args.batches):
            t.transform(batch, out)
        return

    results = {}
    for name in CONFIGS:
        t = make_transformer(name, pca_path)
        out = np.empty(t.output_shape(64), np.float32)
        results[name] = timeit(lambda t=t, out=out: t.transform(batch, out), args.calls)
        print(f"{name:>10}: {results[name]:.3f} ms per 64x3x32x32 batch")
    print(f"full / caffe: {results['full'] / results['caffe']:.2f}x")

    mats = warp_matrices(rng.uniform(0.9, 1.1, 64), rng.uniform(-15, 15, 64), 32, 32)
    out_numba = np.empty(batch.shape, np.float32)
    out_pil = np.empty(batch.shape, np.float32)
    t_numba = timeit(lambda: affine_warp(batch, mats, 0.0, out_numba), args.calls)
    t_pil = timeit(lambda: pillow_warp(batch, mats, out_pil), max(1, args.calls // 10))
    inner = (slice(None), slice(None), slice(4, 28), slice(4, 28))  # borders differ (Pillow's fill rule)
    diff = np.abs(out_numba[inner] - out_pil[inner]).max()
    print(f"warp: numba {t_numba:.3f} ms, Pillow {t_pil:.3f} ms per batch: Pillow / numba = {t_pil / t_numba:.1f}x "
          f"(max |difference| inside the border {diff:.3g})")


if __name__ == "__main__":
    main()
