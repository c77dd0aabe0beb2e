"""CUDA-graph capture of one grid-predictor step (network + fused step kernel), replayed at every
step of a window."""

from __future__ import annotations

import torch


class CapturedStep:
    """One predictor step — network + fused step kernel — captured once in a CUDA graph and
    replayed with new σ, δσ and x written into its static inputs (no host sync, no launch
    overhead). The kernels read their Philox seed/offset from a tensor drawn by torch's own
    random op, so every replay draws fresh numbers, the same ones the uncaptured step would draw
    from the same generator state. The warm-up before the capture runs on copies and gives the
    generator its state back."""

    def __init__(self, net, graph, pred, x, frozen, generator):
        self.net, self.graph, self.pred, self.frozen = net, graph, pred, frozen
        self.generator = generator
        self.x = x.clone()
        self.sigma = torch.zeros(x.shape[0], device=x.device)
        self.dsigma = torch.zeros(x.shape[0], device=x.device)
        gen = generator or torch.cuda.default_generators[x.device.index or 0]
        state = gen.get_state()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._run()
        torch.cuda.current_stream(x.device).wait_stream(side)
        gen.set_state(state)
        self.cuda_graph = torch.cuda.CUDAGraph()
        if generator is not None:
            if not hasattr(self.cuda_graph, "register_generator_state"):
                raise ValueError(f"cuda_graph=True with a generator needs torch >= 2.5 "
                                 f"(CUDAGraph.register_generator_state); torch "
                                 f"{torch.__version__} can capture the default generator only")
            self.cuda_graph.register_generator_state(generator)
        with torch.cuda.graph(self.cuda_graph):
            self.out = self._run()

    def _run(self):
        log_score, parts = self.net.step_scores(self.x, self.sigma, count=False)
        return self.pred.step(self.graph, log_score, self.x, self.dsigma, self.generator,
                              self.frozen, False, validate=False, **parts)

    def __call__(self, x, sigma, dsigma):
        self.x.copy_(x)
        self.sigma.fill_(sigma)
        self.dsigma.fill_(dsigma)
        self.cuda_graph.replay()
        self.net.calls += 1
        self.net.sequences += x.shape[0]
        return self.out.clone()
