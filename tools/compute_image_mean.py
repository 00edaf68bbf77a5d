"""Compute the per-pixel mean of an LMDB of caffe.Datum (Caffe's compute_image_mean).

Usage::

    python tools/compute_image_mean.py INPUT_DB [OUTPUT_FILE]

Writes the mean as a BlobProto binaryproto (num 1, channels, height, width) to
OUTPUT_FILE when given (use it as ``transform_param { mean_file: ... }``) and logs
each channel's mean value (usable as ``mean_value``).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

try:
    import pycaffe_lite  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pycaffe_lite.data.mean import compute_mean, save_mean
from pycaffe_lite.errors import PliteError

log = logging.getLogger("compute_image_mean")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input_db")
    ap.add_argument("output_file", nargs="?")
    ap.add_argument("--backend", default="lmdb", help="lmdb (the only one supported)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.backend.lower() != "lmdb":
        print(f"error: backend '{args.backend}' is not supported; use --backend=lmdb", file=sys.stderr)
        return 1
    try:
        proto = compute_mean(args.input_db)
        if args.output_file:
            save_mean(proto, args.output_file)
            log.info("Wrote the mean to %s", args.output_file)
    except PliteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
