"""sedd-kernels: fused CPU/CUDA kernels for Score Entropy Discrete Diffusion.

Functional API (fused kernels): :func:`score_entropy`, :func:`linear_score_entropy`,
:func:`linear_cross_entropy` (the autoregressive baseline's loss), :func:`perturb`, :func:`euler_step`,
:func:`analytic_step`, :func:`denoise_step` (all three: :func:`reverse_step` with a kind),
:func:`sample_categorical`; closed-form dense rows
:func:`transition`, :func:`staggered_score`; dense user rate matrices: :class:`GeneralGraph`.
Plain-PyTorch twins of every op, following docs/math.md literally: :mod:`sedd_kernels.reference`.
"""

import torch  # noqa: F401  (loads libtorch before the extension)

from . import _C  # noqa: F401  (registers torch.ops.sedd.*)
from . import reference
from ._ops import score_entropy
from ._sampling import (analytic_step, denoise_step, euler_step, perturb, reverse_step,
                        sample_categorical, staggered_score, transition)
from .general import GeneralGraph
from .linear import linear_score_entropy
from .linear_ce import linear_cross_entropy

__all__ = ["score_entropy", "perturb", "transition", "staggered_score", "euler_step",
           "analytic_step", "denoise_step", "reverse_step", "sample_categorical", "GeneralGraph",
           "reference",
           "linear_score_entropy", "linear_cross_entropy",
           "build_info"]
__version__ = "0.1.0"


def build_info():
    """How the extension was built: {'cpu_isa': 'avx512' | 'avx2+fma' | ..., 'cuda': bool}."""
    return _C.build_info()
