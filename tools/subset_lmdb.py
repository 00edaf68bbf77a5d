"""Keep some classes of an LMDB of caffe.Datum and relabel them 0..k-1 (for fine-tuning).

Usage::

    python tools/subset_lmdb.py SRC_DB DST_DB --classes 4,9 [--limit N]

Records whose label is the i-th of ``--classes`` are copied, in key order, with label i (so
``--classes 4,9`` makes a 4-versus-9 set with 4 -> 0 and 9 -> 1); every other record is
dropped.  Keys are renumbered ``%08d`` as convert_mnist_data writes them; the pixels (raw or
encoded) are copied unchanged.  ``--limit`` keeps at most N records.  The new database is
built in ``DST_DB.tmp`` and renamed into place.  Logs how many records of each class were kept.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

try:
    import pycaffe_lite  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pycaffe_lite.errors import DataError, PliteError

log = logging.getLogger("subset_lmdb")


def subset_lmdb(src: str | os.PathLike, dst: str | os.PathLike, classes: list[int],
                limit: int | None = None) -> dict[int, int]:
    """Copy the records of ``classes`` from ``src`` to ``dst`` relabelled by their position in
    ``classes``; return ``{original class: records kept}``."""
    import lmdb

    from pycaffe_lite.data.images import write_datum_records
    from pycaffe_lite.data.lmdb_source import LMDBSource
    from pycaffe_lite.proto import caffe_pb2

    if not classes or len(set(classes)) != len(classes):
        raise DataError(f"--classes must list distinct labels, e.g. 4,9 (got {classes})")
    new_label = {c: i for i, c in enumerate(classes)}
    with LMDBSource(os.fspath(src), cache_limit_bytes=0):  # checks it exists and holds Datums
        pass
    counts = dict.fromkeys(classes, 0)
    env = lmdb.open(os.fspath(src), readonly=True, lock=False, subdir=os.path.isdir(src))
    try:
        with env.begin() as txn:
            records = []
            datum = caffe_pb2.Datum()
            for key, value in txn.cursor():
                datum.ParseFromString(value)
                if datum.label not in new_label:
                    continue
                counts[datum.label] += 1
                datum.label = new_label[datum.label]
                records.append((f"{len(records):08d}".encode(), datum.SerializeToString()))
                if limit is not None and len(records) >= limit:
                    break
    finally:
        env.close()
    if not records:
        raise DataError(f"{src}: no record has a label in {classes}")
    write_datum_records(dst, records)
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src_db")
    ap.add_argument("dst_db")
    ap.add_argument("--classes", required=True, help="labels to keep, comma separated; the i-th becomes label i")
    ap.add_argument("--limit", type=int, help="keep at most N records")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        classes = [int(c) for c in args.classes.split(",") if c.strip()]
        counts = subset_lmdb(args.src_db, args.dst_db, classes, args.limit)
    except ValueError:
        print(f"error: --classes must be integers separated by commas (got '{args.classes}')", file=sys.stderr)
        return 1
    except PliteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for i, c in enumerate(classes):
        log.info("class %d -> label %d: %d records", c, i, counts[c])
    log.info("Wrote %d records to %s", sum(counts.values()), args.dst_db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
