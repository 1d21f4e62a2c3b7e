"""Run an entry point with a real SIGTERM sent to its own process at a chosen point, as SLURM would send it
then, without the timing race of a signal from outside:

    python tests/faults.py POINT N SCRIPT [overrides ...]

POINT is where the N-th call (in this process) sends it: ``generate`` (a batch of sampling,
``TextGenerator._generate_batch``), ``judge`` (``RuleJudge.judge``) or ``train`` (a training step,
``DPOModule.training_step``). The code runs as it ships; the signal is handled by its own handlers.
"""

import os
import runpy
import signal
import sys

POINTS = {
    "generate": ("congrad.generation.sampling", "TextGenerator", "_generate_batch"),
    "judge": ("congrad.judging.rule", "RuleJudge", "judge"),
    "train": ("congrad.models.dpo_module", "DPOModule", "training_step"),
}


def arm(point: str, nth: int) -> None:
    import importlib

    module, cls_name, method = POINTS[point]
    cls = getattr(importlib.import_module(module), cls_name)
    original, calls = getattr(cls, method), [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == nth:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    setattr(cls, method, wrapped)


if __name__ == "__main__":
    point, nth, script, *overrides = sys.argv[1:]
    arm(point, int(nth))
    sys.argv = [script, *overrides]
    runpy.run_path(script, run_name="__main__")
