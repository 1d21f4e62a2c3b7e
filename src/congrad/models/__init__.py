"""Policy construction, the DPO LightningModule and preference losses."""

from congrad.models.dpo_module import DPOModule
from congrad.models.factory import build_policy

__all__ = ["DPOModule", "build_policy"]
