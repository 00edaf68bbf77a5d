"""Convert MNIST IDX files into an LMDB of caffe.Datum (Caffe's convert_mnist_data).

Usage::

    python tools/convert_mnist_data.py IMAGE_FILE LABEL_FILE OUTPUT_DB [--overwrite] [--limit N]

IMAGE_FILE / LABEL_FILE are IDX files (``train-images-idx3-ubyte`` and
``train-labels-idx1-ubyte``, gzipped or not).  Keys are ``%08d`` in file order.
``--backend`` is accepted for Caffe's command line; only ``lmdb`` exists.
``plite data mnist`` does this for both sets at once.
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

from pycaffe_lite.data.mnist import convert_mnist
from pycaffe_lite.errors import PliteError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image_file")
    ap.add_argument("label_file")
    ap.add_argument("output_db")
    ap.add_argument("--backend", default="lmdb", help="lmdb (the only one supported)")
    ap.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DB if it exists")
    ap.add_argument("--limit", type=int, default=None, help="convert only the first N records")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.backend.lower() != "lmdb":
        print(f"error: backend '{args.backend}' is not supported; use --backend=lmdb", file=sys.stderr)
        return 1
    try:
        convert_mnist(args.image_file, args.label_file, args.output_db, limit=args.limit,
                      overwrite=args.overwrite)
    except PliteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
