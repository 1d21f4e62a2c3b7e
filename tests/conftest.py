"""Test-session environment: no network, offline W&B, Triton kernels interpreted on CPU-only machines.

Set at import time, before anything imports triton, wandb or the Hugging Face hub client.
"""

import os

import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
