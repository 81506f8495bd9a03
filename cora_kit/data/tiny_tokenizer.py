"""Builder of the tiny preset's tokenizer (shipped in ``cora_kit/assets/tiny_tokenizer``).

A byte-level BPE (the ``tokenizers`` library, like Qwen's own tokenizer, so any text
encodes without unknown tokens) trained on the synthetic set's query/answer language plus
a list of common English caption words, with ChatML special tokens and a ChatML chat
template. The small vocabulary keeps the tiny LM's embedding and output layers cheap.
``<|vision|>`` is not in the file: the ``qwen3`` adapter adds it, as it does for Qwen3.

Regenerate (deterministic) with::

    python -m cora_kit.data.tiny_tokenizer [OUT_DIR]

It lives with the data because it is built from the synthetic set's language; the
``qwen3`` adapter finds the shipped copy through ``tiny_tokenizer_dir()``.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

VOCAB_SIZE = 768
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

#: Common words of panorama captions (QuIC-360 style), so real text stays short too.
CAPTION_WORDS = """
a an the this that these those there here is are was were be been it its they them their
of in on at to from with by for and or but not no yes as into onto over under above below
near far next behind front left right side top bottom middle center centre around between
across along inside outside up down back view viewer panorama image picture photo scene
room street road building house wall floor ceiling window door table chair sofa bed desk
tree trees grass sky cloud clouds sun water sea river lake beach mountain hill field park
car cars bus bike people person man woman child dog cat bird light lamp sign shop store
city town garden path bridge tower church stairs kitchen bathroom office hall corridor
large small big little tall short long wide open closed old new bright dark white black
red green blue yellow orange purple pink brown grey gray colour color colours colors
one two three four five six seven eight nine ten many some several few any all each
what where which who how why when describe show see seen look looking shows showing
standing sitting walking parked hanging lying placed located there's it's
""".split()


def synthetic_corpus(n_scenes: int = 3000, seed: int = 0) -> list[str]:
    """Queries and all reference answers of ``n_scenes`` synthetic scenes."""
    import numpy as np

    from cora_kit.data.captions import make_queries
    from cora_kit.data.scene import sample_scene

    rng = np.random.default_rng(seed)
    lines: list[str] = []
    for _ in range(n_scenes):
        scene = sample_scene(rng)
        for qa in make_queries(rng, scene, 8):
            lines.append(qa.query)
            lines.extend(qa.references)
    return lines


def build_tokenizer(vocab_size: int = VOCAB_SIZE):
    """The trained ``transformers.PreTrainedTokenizerFast`` with the ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = synthetic_corpus() + [" ".join(CAPTION_WORDS)] * 20
    corpus += [f" {w}" for w in CAPTION_WORDS for _ in range(5)]
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_tokenizer_dir() -> Path:
    """Directory of the packaged tiny tokenizer (tokenizer.json + tokenizer_config.json)."""
    return Path(str(resources.files("cora_kit") / "assets" / "tiny_tokenizer"))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else tiny_tokenizer_dir()
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    tok.save_pretrained(str(out))
    print(f"wrote {len(tok)} tokens to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
