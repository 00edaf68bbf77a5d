"""Every layer type, registered in ``pycaffe_lite.registry.LAYERS`` on import.

One family per module; importing this package imports them all.
"""

from . import (  # noqa: F401  (imported for their registrations)
    accuracy,
    convolution,
    data,
    inner_product,
    input,
    loss,
    neuron,
    pooling,
    shape,
    softmax,
)
