"""Train a policy with DPO on multilingual preference pairs.

    python train.py                              # tiny model, tiny data, CPU, a few minutes
    python train.py +experiment=llama3_10lang    # Llama-3-8B-Instruct, LoRA, one GPU
    python train.py -m dpo.beta=0.05,0.1         # a Hydra multirun sweep

Every setting lives in conf/; see README.md.
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from congrad.utils.entry import exit_on_user_error  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from congrad.preflight import check_references
    from congrad.settings import check_settings

    check_settings(cfg)  # every setting, before any model or data loads
    check_references(cfg, "train")  # every model, adapter, checkpoint, data set and account it names
    from congrad.run import train

    train(cfg)


if __name__ == "__main__":
    main()
