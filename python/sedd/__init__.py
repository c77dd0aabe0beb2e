"""The SEDD modeling layer on top of sedd_kernels: graphs, noise schedules, the DDiT network, the
loss, samplers, data (the built-in language, text files, Hugging Face datasets) and the trainer."""

from .graphs import Absorbing, Uniform, get_graph
from .model import DDiT, ModelConfig, PRESETS
from .noise import Geometric, LogLinear, get_noise

__all__ = ["Absorbing", "Uniform", "get_graph", "DDiT", "ModelConfig", "PRESETS", "LogLinear",
           "Geometric", "get_noise"]
