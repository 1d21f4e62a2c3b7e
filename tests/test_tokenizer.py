import pytest
from transformers import AutoTokenizer

from congrad.models.tokenizer import build_tiny_tokenizer

MULTILINGUAL = [
    "Photosynthesis makes sugar.",
    "Die Schwerkraft hält uns auf dem Boden.",
    "Фотосинтез — это процесс.",
    "光合作用是植物制造糖分的过程。",
    "光合成とは、植物が糖を作るしくみです。",
    "التمثيل الضوئي هو العملية",
    "प्रकाश संश्लेषण वह प्रक्रिया है",
    "광합성은 과정입니다.",
    "emoji 🌍, tabs\tand\nnewlines  ",
]

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Was ist ein Vulkan?"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.mark.parametrize("text", MULTILINGUAL)
def test_round_trips_every_script_exactly(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_vocabulary_size_and_special_tokens(tokenizer):
    assert len(tokenizer) == 512
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.pad_token_id is not None
    assert tokenizer.eos_token == "<|end|>"
    assert tokenizer.bos_token is None
    for token in ("<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"):
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] == tokenizer.convert_tokens_to_ids(token)
    assert tokenizer("abc")["input_ids"] == tokenizer("abc", add_special_tokens=False)["input_ids"]


def test_merges_were_learned_from_the_templates(tokenizer):
    assert len(tokenizer("Photosynthesis", add_special_tokens=False)["input_ids"]) < len("Photosynthesis")


def test_chat_template(tokenizer):
    assert tokenizer.apply_chat_template(MESSAGES, tokenize=False) == (
        "<|system|>\nBe brief.<|end|>\n<|user|>\nWas ist ein Vulkan?<|end|>\n"
    )
    assert tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == (
        "<|system|>\nBe brief.<|end|>\n<|user|>\nWas ist ein Vulkan?<|end|>\n<|assistant|>\n"
    )


def test_bos_variant_starts_with_exactly_one_bos():
    tokenizer = build_tiny_tokenizer(with_bos=True)
    assert tokenizer.bos_token == "<|bos|>"
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    assert text.startswith("<|bos|><|system|>\n") and text.count("<|bos|>") == 1
    assert tokenizer("abc")["input_ids"] == [
        tokenizer.bos_token_id,
        *tokenizer("abc", add_special_tokens=False)["input_ids"],
    ]
    assert tokenizer.get_vocab() == build_tiny_tokenizer().get_vocab()


def test_deterministic(tokenizer):
    again = build_tiny_tokenizer()
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    assert build_tiny_tokenizer(vocab_size=300).get_vocab() != tokenizer.get_vocab()


def test_too_small_vocabulary_is_rejected():
    with pytest.raises(ValueError, match="vocab_size"):
        build_tiny_tokenizer(vocab_size=100)


@pytest.mark.parametrize("with_bos", [False, True])
def test_save_and_reload_give_the_same_tokenizer(tmp_path, with_bos):
    tokenizer = build_tiny_tokenizer(with_bos=with_bos)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert reloaded.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    assert reloaded.chat_template == tokenizer.chat_template
    assert (reloaded.pad_token, reloaded.eos_token, reloaded.bos_token) == (
        tokenizer.pad_token,
        tokenizer.eos_token,
        tokenizer.bos_token,
    )
    for text in MULTILINGUAL:
        assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reloaded.apply_chat_template(MESSAGES, tokenize=False) == tokenizer.apply_chat_template(
        MESSAGES, tokenize=False
    )
