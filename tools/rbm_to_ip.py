"""Turn the RBM layers of caffemodels into InnerProduct weights, to fine-tune a pre-trained DBN.

Usage::

    python tools/rbm_to_ip.py RBM.caffemodel [MORE.caffemodel ...] -o OUT.caffemodel [--rename h1=ip1]

An RBM layer holds three blobs, W (H, V), the visible bias b (V,) and the hidden bias c (H,);
its top is ``P(h|x) = sigmoid(x W^T + c)``, which is exactly an InnerProduct layer with weight W
and bias c followed by a Sigmoid.  ``net.copy_from`` matches layers by name and needs the same
number of blobs, so this tool writes, for every layer of type ``RBM`` in the inputs, a layer of
type ``InnerProduct`` with the same name (or the ``--rename``d one) and the blobs ``[W, c]``;
the visible bias b is dropped (it only serves the reconstruction).  Layers of other types are
not copied.  When several inputs hold a layer of the same name, the last one wins (e.g. RBM 2's
snapshot also holds the frozen RBM 1).  Then::

    plite train --solver finetune_solver.prototxt --weights OUT.caffemodel

copies W and c into the classifier's InnerProduct layers of those names (Hinton & Salakhutdinov
2006: pre-train greedily, then fine-tune by back-propagation).
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

log = logging.getLogger("rbm_to_ip")


def rbm_to_ip(inputs: list[str | os.PathLike], output: str | os.PathLike,
              rename: dict[str, str] | None = None) -> list[str]:
    """Write the RBM layers of ``inputs`` as InnerProduct layers ``[W, c]`` to ``output``;
    return the names written, in order."""
    from pycaffe_lite.io.caffemodel import read_caffemodel, write_caffemodel
    from pycaffe_lite.proto import caffe_pb2

    rename = dict(rename or {})
    layers: dict[str, caffe_pb2.LayerParameter] = {}
    seen: list[str] = []  # the RBM layers' own names
    for path in inputs:
        param = read_caffemodel(path)
        for lp in param.layer:
            if lp.type != "RBM":
                continue
            if len(lp.blobs) != 3:
                raise DataError(f"{os.fspath(path)}: RBM layer '{lp.name}' holds {len(lp.blobs)} blobs, not the "
                                "three W, b, c of an RBM")
            seen.append(lp.name)
            name = rename.get(lp.name, lp.name)
            ip = caffe_pb2.LayerParameter(name=name, type="InnerProduct")
            ip.blobs.add().CopyFrom(lp.blobs[0])  # W (H, V): InnerProduct's (num_output, K)
            ip.blobs.add().CopyFrom(lp.blobs[2])  # c (H,): the bias
            if name in layers:
                log.info("%s: layer '%s' replaces the one read before", os.fspath(path), name)
            layers[name] = ip
    if not layers:
        raise DataError(f"no layer of type RBM in {', '.join(os.fspath(p) for p in inputs)}; give the caffemodels "
                        "`plite train` wrote for the RBM solvers")
    missing = sorted(set(rename) - set(seen))
    if missing:
        raise DataError(f"--rename names {', '.join(repr(m) for m in missing)}, but the inputs have no RBM layer of "
                        f"that name (RBM layers: {', '.join(repr(n) for n in dict.fromkeys(seen))})")
    out = caffe_pb2.NetParameter(name="rbm_to_ip")
    for ip in layers.values():
        out.layer.add().CopyFrom(ip)
    write_caffemodel(out, output)
    return list(layers)


def _parse_rename(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise DataError(f"--rename takes OLD=NEW (an RBM layer name and an InnerProduct layer name), got '{item}'")
        pairs[old] = new
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="caffemodels holding RBM layers")
    ap.add_argument("-o", "--out", required=True, help="caffemodel to write")
    ap.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                    help="write RBM layer OLD as InnerProduct layer NEW (repeatable)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        names = rbm_to_ip(args.inputs, args.out, _parse_rename(args.rename))
    except PliteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    log.info("Wrote InnerProduct weights [W, c] of %s to %s", ", ".join(names), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
