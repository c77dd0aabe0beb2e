"""What every model family shares: the graphs of the forward process (`graphs`), the noise
schedules (`noise`), the score-entropy training loss and likelihood bound (`losses`), and the
config options with their command-line checks (`options`).

Imports: torch and sedd_kernels only — nothing else of `sedd`."""

from .graphs import GRAPHS, Absorbing, General, Graph, Uniform, get_graph, graph_class
from .noise import Geometric, LogLinear, get_noise

__all__ = ["GRAPHS", "Absorbing", "General", "Graph", "Uniform", "get_graph", "graph_class",
           "Geometric", "LogLinear", "get_noise"]
