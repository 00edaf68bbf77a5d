"""Numba kernels: pure ``@njit(cache=True)`` functions over float32 arrays and int scalars.

No Blob, proto or dict ever enters this package.  Outputs are preallocated by the caller and
passed last (``out_*``); geometry travels as a small int64 array ``geom`` built by the plain
Python helpers next to each kernel (``im2col.make_geom``, ``pooling.make_pool_geom``), which
also validate it, so the kernels themselves never raise.

Modules
-------
im2col
    Whole-batch im2col / col2im for one GEMM per convolution pass, in three layouts.
pooling
    MAX (with an int32 argmax mask) and AVE pooling, forward and backward, Caffe's rules.
stochastic_pooling
    STOCHASTIC pooling: TRAIN sampling (index in the MAX mask's layout), TEST weighted average.
sampling
    The RBM's contrastive-divergence step: logistic units, Bernoulli draws, statistics.
spin
    Atomic counters, bounded spin-waits and the GIL-free product worker's loop (NumPy's own
    OpenBLAS ``sgemm`` called from Numba; pycaffe_lite/_split.py).

Parallel kernels use ``prange``; set ``OMP_WAIT_POLICY=passive`` and
``OPENBLAS_THREAD_TIMEOUT`` before numpy/numba are imported (see PERFORMANCE_NOTES), and call
``numba.set_num_threads(1)`` to run them serially.
"""
