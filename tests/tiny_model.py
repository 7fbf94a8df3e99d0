"""A tiny randomly initialised GPT-2 with an in-memory byte-level tokenizer.

Builds in milliseconds and needs no download: every byte is one token (ids 0..255, in the
GPT-2 byte-to-unicode alphabet) plus ``<|endoftext|>`` (id 256) as BOS/EOS/PAD. Saved to a
folder, it loads through the same code path as any local Hugging Face model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

EOS = "<|endoftext|>"


def build_tokenizer() -> PreTrainedTokenizerFast:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab[EOS] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS, unk_token=None
    )


def build_model(seed: int = 0, *, n_layer: int = 2, n_embd: int = 32) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=257,
        n_positions=256,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=4,
        bos_token_id=256,
        eos_token_id=256,
        pad_token_id=256,
    )
    model = GPT2LMHeadModel(config)
    # Random init gives near-uniform logits; sharpen the (tied) embeddings so that
    # temperature visibly changes the distribution.
    with torch.no_grad():
        model.transformer.wte.weight.mul_(4.0)
    return model.eval()


def save_tiny(path: Path, seed: int = 0) -> Path:
    """Write the tiny model and tokenizer to ``path`` (a Hugging Face model folder)."""
    path.mkdir(parents=True, exist_ok=True)
    build_model(seed).save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path
