#!/bin/sh
# Regenerate the README's table: for each sequence length T, write the data, train the three
# nets (same solver) and print the final test MSE (2 x the EuclideanLoss), the first tested
# iteration where the test MSE was below 0.01, and the training time.
#
#   sh models/adding_problem/run.sh [T ...]        (from the repository root; default T: 10 50 100)
#
# Works in a scratch folder (WORK, default a new temporary one): the prototxts are written for
# T = 50, so each T gets copies whose Slice keeps step T - 1. PLITE (default `plite`) is the
# command to run, e.g. PLITE="python -m pycaffe_lite.cli". The logs stay in WORK/T<T>/<net>.log.
set -eu
TS="${*:-10 50 100}"
PLITE="${PLITE:-plite}"
HERE="$(cd "$(dirname "$0")" && pwd)"
WORK="${WORK:-$(mktemp -d)}"
echo "work folder: $WORK"
printf '%-6s %-5s %-10s %-22s %s\n' T net "test MSE" "MSE < 0.01 from iter" "train seconds"
for T in $TS; do
    dir="$WORK/T$T"
    mkdir -p "$dir/models/adding_problem"
    (cd "$dir" && $PLITE --quiet data adding --T "$T" --n-train 10000 --n-test 1000 --seed 0)
    for net in rnn lstm gru; do
        sed -e "s/slice_point: 49 /slice_point: $((T - 1)) /" -e "s/(T = 50)/(T = $T)/" \
            "$HERE/$net.prototxt" > "$dir/models/adding_problem/$net.prototxt"
        cp "$HERE/${net}_solver.prototxt" "$dir/models/adding_problem/"
        start=$(date +%s)
        (cd "$dir" && $PLITE train --solver "models/adding_problem/${net}_solver.prototxt" --no-progress) \
            > "$dir/$net.log" 2>&1
        seconds=$(( $(date +%s) - start ))
        # the test losses, every test_interval (500) iterations from 0: MSE = 2 x loss
        grep "Test net output #0: loss = " "$dir/$net.log" | sed 's/.*loss = \([^ ]*\).*/\1/' | awk \
            -v T="$T" -v net="$net" -v s="$seconds" '{ mse = 2 * $1; if (mse < 0.01 && at == "") at = (NR - 1) * 500 }
            END { printf "%-6s %-5s %-10.2g %-22s %s\n", T, net, mse, (at == "" ? "never" : at), s }'
    done
done
