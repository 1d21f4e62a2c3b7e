"""Evaluate a policy against its baseline on held-out data, per language, seen and unseen in training.

    python evaluate.py output_dir=out/ run_dir=logs/train/runs/<run>       # a train.py run
    python evaluate.py output_dir=out/ model.lora.adapter_path=adapter/    # the base model + an adapter
    python evaluate.py output_dir=out/                                     # the base model against itself

Writes out/results.json, per_language.csv, generations.jsonl, per_language.png; every setting lives in
conf/ (evaluate.yaml, eval/).
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from congrad.utils.entry import exit_on_user_error  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from congrad.preflight import check_references
    from congrad.settings import check_settings

    check_settings(cfg)  # every setting, before any model or data loads
    check_references(cfg, "evaluate")  # every model, adapter, checkpoint, data set and account it names
    from congrad.evaluation.standalone import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
