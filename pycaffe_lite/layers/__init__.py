"""Every layer type, registered in ``pycaffe_lite.registry.LAYERS`` on import.

One family per module; importing this package imports them all.
"""

from . import (  # noqa: F401  (imported for their registrations)
    accuracy,
    convolution,
    crop,
    data,
    deconvolution,
    hdf5,
    im2col_layer,
    image_data,
    inner_product,
    input,
    loss,
    lrn,
    memory_data,
    neuron,
    neuron_extra,
    normalization,
    pad,
    permute,
    pooling,
    python_layer,
    rbf,
    rbm,
    recurrent,
    scale_bias,
    scaled_tanh,
    shape,
    softmax,
    spp,
    subsampling,
    utility,
    window_data,
)
