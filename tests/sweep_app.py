"""A Hydra app whose jobs end each way a congrad job can (finished, a setting to fix, diverged, a fault,
Ctrl-C), behind the entry points' own error handling and the project's Hydra config (``conf/hydra/``, with
its sweep status callback); ``outcome=...`` picks the way:

    python tests/sweep_app.py +outcome=user hydra.run.dir=DIR
    python tests/sweep_app.py -m +outcome=ok,user,diverged,fault,ok hydra.sweep.dir=DIR
"""

import os
from pathlib import Path

import hydra

from congrad.errors import ConfigError, NonFiniteError
from congrad.utils.entry import exit_on_user_error

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="train")
@exit_on_user_error
def main(cfg) -> str:
    outcome = cfg.outcome
    if outcome == "user":
        raise ConfigError("filter.keep_ratio=1.5: must be a number in (0, 1], or null")
    if outcome == "diverged":
        raise NonFiniteError("training diverged at step 2 (epoch 0, batch 2): the loss is nan")
    if outcome == "fault":
        return {}["a key that is not there"]
    if outcome == "sigint":
        raise KeyboardInterrupt
    return "finished"


if __name__ == "__main__":
    main()
