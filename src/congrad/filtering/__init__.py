"""ConGrad filtering: sketch per-sample gradients, aggregate them per language, find a consensus direction
by gradient surgery, and keep the pairs whose sketch agrees with it.

The tensor-only parts work on sketches (float32 vectors in R^w) and know nothing of models:
:mod:`.aggregates` (per-language EMA), :mod:`.surgery` (PCGrad, GradVac, mean), :mod:`.selection`
(cosine scores, kept mask).
"""
