"""Evaluation: the likelihood figure of a model under the two published protocols (protocols:
sedd and mdlm, the bound or the exact NLL as the model's family gives it), sample quality
(genppl: generative perplexity under a causal LM, unigram entropy; the built-in language's exact
likelihood where the data is that language).

Imports: sedd.families, sedd.data. Optional dependencies imported where used: `datasets`
(named corpora), `transformers` (the causal LM of generative perplexity)."""

from .genppl import load_causal_lm, load_samples, score_texts, unigram_entropy
from .protocols import (PROTOCOLS, BoundReport, EvalSet, GenPPLReport, bound_report, evaluate,
                        evaluation_set, exact_sample_report, lm_sample_report)

__all__ = ["load_causal_lm", "load_samples", "score_texts", "unigram_entropy", "PROTOCOLS",
           "BoundReport", "EvalSet", "GenPPLReport", "bound_report", "evaluate", "evaluation_set",
           "exact_sample_report", "lm_sample_report"]
