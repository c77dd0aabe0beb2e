"""Sampling: the sampler (`sampler.sample`, a short composition of named parts), the predictor
registry (`predictors`, with `first_hitting`, `confidence` and `remdm`), one reverse step over
the rows that can move (`mover`), conditions and their text templates (`conditions`),
semi-autoregressive windows (`windows`), sub-blocks and the dual KV cache (`dual_cache`),
temperature/top-p (`shaping`), the network as the predictors see it with the exact per-sequence
cache (`network`) and CUDA-graph capture (`capture`).

Imports: `sedd.core` and `sedd.nn` (compile_model) only; families call into it."""

from .conditions import Condition, condition_from
from .network import NetworkView
from .predictors import PREDICTORS, Predictor, get_predictor, register
from .sampler import SampleStats, Settings, sample
from .shaping import Shaping, shaped_log_probs
from .windows import window_starts

__all__ = ["Condition", "condition_from", "NetworkView", "PREDICTORS", "Predictor",
           "get_predictor", "register", "SampleStats", "Settings", "sample", "Shaping",
           "shaped_log_probs", "window_starts"]
