"""A tiny byte-level BPE tokenizer, trained in code, for tests and tiny experiments without downloads.

It is trained on every sentence of the synthetic preference templates, so it covers all their languages;
being byte-level it still encodes and decodes any text exactly. Training is deterministic (BPE breaks
ties between equally frequent pairs by the pair itself), so the same arguments give the same tokenizer.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from congrad.data.synthetic import template_texts
from congrad.errors import ConfigError

PAD, BOS, END = "<|pad|>", "<|bos|>", "<|end|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD, BOS, END, *ROLE_TOKENS)

# Each message renders as "<|role|>\n{content}<|end|>\n"; the generation prompt is "<|assistant|>\n".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def build_tiny_tokenizer(vocab_size: int = 512, *, with_bos: bool = False) -> PreTrainedTokenizerFast:
    """Train and wrap the tiny tokenizer; ``len(tokenizer) == vocab_size``.

        ``<|end|>`` is both the end of a chat turn and the eos token, so a generation stops at the end of
        the assistant's turn. By default there is no BOS token (the chat template starts with the role
        token). ``with_bos=True`` makes ``<|bos|>`` the bos token and starts the chat template with it, the
        way Llama-style templates do, and ``tokenizer(text)`` prepends it (``add_special_tokens=True``), so
    callers must not add it twice; the vocabulary is the same either way.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ConfigError(
            f"model.tokenizer.vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (bytes + special tokens)"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(template_texts(), trainer=trainer)
    if with_bos:  # like Llama: encoding with add_special_tokens=True prepends BOS
        bos_id = tokenizer.token_to_id(BOS)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        eos_token=END,
        bos_token=BOS if with_bos else None,
        additional_special_tokens=list(ROLE_TOKENS),
        chat_template=("{{ bos_token }}" + CHAT_TEMPLATE) if with_bos else CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
