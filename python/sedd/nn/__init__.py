"""The networks: their shared config and layers (`layers`), the DDiT of SEDD (`ddit`), the causal
transformer of the autoregressive baseline (`causal`). A family (sedd.families) builds the
network it needs from a ModelConfig.

Imports: torch and sedd_kernels only."""

from .causal import ARModel, KVCache
from .ddit import DDiT
from .layers import ModelConfig, compile_model

__all__ = ["ARModel", "KVCache", "DDiT", "ModelConfig", "compile_model"]
