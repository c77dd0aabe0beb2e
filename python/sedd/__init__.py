"""The SEDD modeling layer on top of sedd_kernels, in sub-packages that import only downward:

    core        graphs, noise schedules, the score-entropy loss and bound, config options
    data        the built-in language (exact likelihood), tokenizers, corpora
    nn          the networks: shared layers and ModelConfig, the DDiT, the causal transformer
    sampling    the sampler as parts, the predictor registry
    families    one module per model family (sedd, ar, ...), registered by name
    loading     every checkpoint format behind one `load`; saving and export
    config      the presets and the run's TrainConfig, resolved in one function
    training    the Trainer, metrics, distributed setup
    evaluation  the likelihood-bound protocols, generative perplexity
    cli         the doors' shared helper (only the doors import it)

The names below are the Python API; docs/ is the manual."""

import warnings

from .core.graphs import Absorbing, Uniform, get_graph
from .core.noise import Geometric, LogLinear, get_noise
from .families import FAMILIES, build_model, family_of, get_family
from .nn.ddit import DDiT
from .nn.layers import ModelConfig
from .sampling import sample

from . import _moved  # noqa: F401,E402  (old module paths, deprecated)



def __getattr__(name):
    if name == "PRESETS":        # the model presets, exported here before the config module
        warnings.warn("sedd.PRESETS is deprecated: use sedd.config.PRESETS (model_preset(name) "
                      "for a preset's ModelConfig fields)", DeprecationWarning, stacklevel=2)
        return _moved.model_presets()
    raise AttributeError(f"module 'sedd' has no attribute {name!r}")


__all__ = ["Absorbing", "Uniform", "get_graph", "Geometric", "LogLinear", "get_noise",
           "FAMILIES", "build_model", "family_of", "get_family", "DDiT", "ModelConfig",
           "sample"]
