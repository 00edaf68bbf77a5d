"""benchmarks/peers.py runs end to end on a tiny configuration and prints Markdown tables.

PyTorch is optional: without it the PyTorch columns read "-" and a line says it was skipped;
with it (a PYTHONPATH that holds it) they hold numbers.  Either way the table has the same shape.
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "peers.py")


def _run(*args: str) -> str:
    r = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=ROOT,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _rows(text: str, header_start: str) -> list[list[str]]:
    """The cells of the data rows of the table whose header starts with ``header_start``."""
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(header_start))
    assert re.fullmatch(r"\|(:?-+:?\|)+", lines[i + 1]), lines[i + 1]
    ncols = lines[i].count("|") - 1
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == ncols, line
        rows.append(cells)
    return rows


def test_quick_mode_prints_train_and_layer_tables():
    out = _run("--quick", "--sections", "train,layers", "--batch", "4", "--cifar-batch", "2",
               "--rounds", "1", "--round-s", "0.001")
    torch_missing = "PyTorch is not installed" in out
    assert out.startswith("PyTorch is not installed") == torch_missing
    assert "## pycaffe_lite vs PyTorch (CPU)" in out
    assert re.search(r"CPU: .+ numpy \d+\.\d+.* numba \d+\.\d+", out)

    (train,) = _rows(out, "| batch | threads | pycaffe_lite ms |")
    assert train[:2] == ["4", "2"]
    assert float(train[2]) > 0
    if torch_missing:
        assert train[3:] == ["-", "-", "-"]
    else:
        assert float(train[3]) > 0 and float(train[4]) > 0 and train[5] in ("yes", "no")

    layers = _rows(out, "| net (batch) | layer | pass |")
    seen = {(r[0], r[1], r[2]) for r in layers}
    for layer in ("conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "loss"):
        assert ("lenet (4)", layer, "forward") in seen
        assert ("lenet (4)", layer, "backward") in seen
    assert ("cifar10_quick (2)", "pool2", "backward") in seen  # AVE pooling
    assert ("cifar10_quick (2)", "conv3", "forward") in seen
    for r in layers:
        assert float(r[3]) > 0
        assert (r[4] == "-") == torch_missing


def test_unknown_section_is_an_error_naming_the_choices():
    r = subprocess.run([sys.executable, SCRIPT, "--sections", "train,gpu"], capture_output=True, text=True,
                       cwd=ROOT, timeout=60, check=False)
    assert r.returncode == 2
    assert "unknown section(s) gpu; choose from train, layers" in r.stderr


def test_threads_section_pairs_one_and_two_threads_per_round():
    out = _run("--quick", "--no-torch", "--sections", "threads", "--batch", "4", "--cifar-batch", "2",
               "--deploy-batch", "1", "--rounds", "2", "--round-s", "0.001")
    rows = _rows(out, "| case | pycaffe_lite 1 thr ms |")
    assert [r[0] for r in rows] == ["LeNet train, batch 4", "CIFAR-10 quick train, batch 2", "CaffeNet forward, batch 1"]
    for r in rows:
        one, two, speedup = float(r[1]), float(r[2]), float(r[3])
        assert one > 0 and two > 0 and speedup > 0
        assert r[4:7] == ["-", "-", "-"] and r[7] in ("yes", "no")
    assert "each round runs 1 and 2 threads back to back" in out
