"""Write a tiny random Llama model as a real GGUF file (float32 tensors, byte-level tokenizer).

Loads through transformers' GGUF path in about a second, so the whole GGUF -> safetensors
cache can be tested without the 30 s embedded model. Same byte alphabet as tests/tiny_model.py:
ids 0..255 are bytes, 256 is ``<|endoftext|>`` (BOS/EOS).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from tokenizers import pre_tokenizers

EOS = "<|endoftext|>"


def write_tiny_gguf(path: Path, seed: int = 0, *, dim: int = 32, layers: int = 2,
                    heads: int = 4, ffn: int = 64, context: int = 128,
                    merge: bool = False) -> Path:
    """Write the GGUF file at ``path`` and return it.

    ``merge=True`` adds one BPE merge (``Ġ t`` -> token 257): llama.cpp refuses a BPE
    vocabulary without merges, so the files both engines load have it.
    """
    rng = np.random.default_rng(seed)
    tokens = [*sorted(pre_tokenizers.ByteLevel.alphabet()), EOS]
    eos = len(tokens) - 1
    if merge:
        tokens.append("Ġt")
    vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_block_count(layers)
    w.add_context_length(context)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(dim // heads)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if i == eos else 1 for i in range(vocab)])  # 1 = normal, 3 = control
    w.add_token_scores([0.0] * vocab)
    w.add_token_merges(["Ġ t"] if merge else [])
    w.add_bos_token_id(eos)
    w.add_eos_token_id(eos)

    def rand(name: str, *shape: int) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.5).astype(np.float32))

    rand("token_embd.weight", vocab, dim)
    w.add_tensor("output_norm.weight", np.ones(dim, np.float32))
    rand("output.weight", vocab, dim)
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(dim, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(dim, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            rand(f"blk.{i}.{name}.weight", dim, dim)
        rand(f"blk.{i}.ffn_gate.weight", ffn, dim)
        rand(f"blk.{i}.ffn_up.weight", ffn, dim)
        rand(f"blk.{i}.ffn_down.weight", dim, ffn)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
