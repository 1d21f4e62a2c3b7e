"""Score a preference set with ConGrad and keep the pairs that agree with the multilingual consensus.

    python filter.py data.path=pairs.jsonl output_dir=out/
    python filter.py data.path=pairs.jsonl output_dir=out/ filter.aggregator=mean sketch.width=16384

Writes out/scores.jsonl, out/kept.jsonl and out/summary.json; every setting lives in conf/ (filter.yaml).
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from congrad.utils.entry import exit_on_user_error  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="filter")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from congrad.preflight import check_references
    from congrad.settings import check_settings

    check_settings(cfg)  # every setting, before any model or data loads
    check_references(cfg, "filter")  # every model, adapter, checkpoint, data set and account it names
    from congrad.filtering.standalone import filter_file

    filter_file(cfg)


if __name__ == "__main__":
    main()
