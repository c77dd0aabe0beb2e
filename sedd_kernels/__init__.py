"""sedd-kernels: fused CPU/CUDA kernels for Score Entropy Discrete Diffusion.

Functional API (fused kernels): :func:`score_entropy`.
Plain-PyTorch twins of every op, following SEDD.md literally: :mod:`sedd_kernels.reference`.
"""

import torch  # noqa: F401  (loads libtorch before the extension)

from . import _C  # noqa: F401  (registers torch.ops.sedd.*)
from . import reference
from ._ops import score_entropy

__all__ = ["score_entropy", "reference", "build_info"]
__version__ = "0.1.0"


def build_info():
    """How the extension was built: {'cpu_isa': 'avx512' | 'avx2+fma' | ..., 'cuda': bool}."""
    return _C.build_info()
