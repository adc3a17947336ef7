"""How a tensor of any shape is seen by libmlorc: a rows x cols matrix."""
import math


def matrix_shape(shape):
    """() -> 1x1, (n,) -> 1xn, (a, b, ...) -> a x prod(b, ...), as mlorc.h says
    for higher-dimensional tensors (row-major flattening, no copy)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])
