#!/bin/sh
# The whole DBN experiment from the repository root: greedy pre-training of two RBMs, conversion
# of their weights, fine-tuning, and the same MLP from random initialisation.
#   sh models/dbn/run.sh           (PLITE="python -m pycaffe_lite.cli" sh models/dbn/run.sh
#                                    to use a source checkout without installing)
set -e
PLITE=${PLITE:-plite}
[ -d data/mnist/mnist_train_lmdb ] || $PLITE data mnist
$PLITE train --solver models/dbn/rbm1_solver.prototxt
$PLITE train --solver models/dbn/rbm2_solver.prototxt --weights models/dbn/rbm1_iter_2000.caffemodel
python tools/rbm_to_ip.py models/dbn/rbm2_iter_2000.caffemodel -o models/dbn/pretrained_iter_2000.caffemodel
$PLITE train --solver models/dbn/finetune_solver.prototxt --weights models/dbn/pretrained_iter_2000.caffemodel
$PLITE train --solver models/dbn/baseline_solver.prototxt
