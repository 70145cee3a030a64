#!/usr/bin/env python3
"""Build the tiny random-weight chat model that the CPU vLLM server serves as `tiny-llama`.

No model hub is reachable from the machines this project runs on, so the end-to-end tests use a
model made here: a 2-layer Llama with random weights (590,464 parameters, 1.3 MB) and a byte-level
BPE tokenizer trained on the source of the stdlib `json` package. It produces gibberish, but real
gibberish: vLLM loads, tokenizes, samples, detokenizes and streams it exactly as it would a real
model, which is all a gateway test needs.

The build is deterministic (fixed seed, sorted training files, one training thread): the same
Python, torch, tokenizers and transformers give byte-identical files, so a request with a `seed`
gives the same text on every machine.

Run it with the python of the venv that has vLLM (it needs torch, tokenizers, transformers):

    $VENV/bin/python scripts/build_tiny_model.py --out ~/.cache/gateway-vllm-cpu/models/tiny-llama

The files are written to a temporary folder next to --out and renamed into place at the end, so
an interrupted build never leaves a half-written model where the server would pick it up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

# The tokenizers library trains in parallel; one thread keeps the merge order reproducible and
# the environment variable must be set before the library is imported.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Nothing here may try to reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SEED = 0
VOCAB_SIZE = 2048
MAX_POSITIONS = 2048
# The order fixes the ids: <unk>=0 <s>=1 </s>=2 <pad>=3 <|im_start|>=4 <|im_end|>=5.
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
EXTRA_SENTENCE = "The quick brown fox jumps over the lazy dog.\n"

# ChatML-like. `content` may be a string or a list of OpenAI-style parts ({"type": "text", ...});
# iterating over message['content'] is what makes vLLM detect the "openai" content format.
# Roles are rendered as given, so unknown roles are not an error.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- elif message['content'] is not none -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def training_texts() -> list[str]:
    """The stdlib `json` package's source files, in name order, plus one English sentence."""
    package_dir = Path(json.__file__).parent
    texts = [p.read_text(encoding="utf-8") for p in sorted(package_dir.glob("*.py"))]
    if not texts:
        sys.exit(f"build_tiny_model: no .py files found in {package_dir}")
    texts.append(EXTRA_SENTENCE)
    return texts


def build_tokenizer(chat_template: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Byte-level: every UTF-8 input encodes (no <unk> in practice), as with GPT-2-style tokenizers.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_texts(), trainer=trainer)
    for want_id, token in enumerate(SPECIAL_TOKENS):
        got = tok.token_to_id(token)
        if got != want_id:
            sys.exit(f"build_tiny_model: special token {token} got id {got}, expected {want_id}")

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        additional_special_tokens=["</s>", "<|im_start|>"],
        model_max_length=MAX_POSITIONS,
        chat_template=chat_template,
        clean_up_tokenization_spaces=False,
    )


def build_model(vocab_size: int):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,  # a head size the CPU attention backend supports
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        bos_token_id=SPECIAL_TOKENS.index("<s>"),
        eos_token_id=SPECIAL_TOKENS.index("<|im_end|>"),
        pad_token_id=SPECIAL_TOKENS.index("<pad>"),
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)  # random init, in float32, from the seeded generator
    model = model.to(torch.bfloat16)  # written to config.json as "dtype": "bfloat16"
    model.eval()
    # Only ids, no sampling defaults: vLLM takes default sampling parameters from this file, and the
    # tests want the server's own defaults.
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to create (replaced if present)")
    args = parser.parse_args()
    out: Path = args.out.expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tokenizer = build_tokenizer(CHAT_TEMPLATE)
        model = build_model(len(tokenizer))
        if len(tokenizer) != VOCAB_SIZE:
            sys.exit(f"build_tiny_model: vocabulary has {len(tokenizer)} tokens, expected {VOCAB_SIZE}")
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        n_params = sum(p.numel() for p in model.parameters())
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"built {out} ({n_params:,} parameters, vocab {VOCAB_SIZE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
