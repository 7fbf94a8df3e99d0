"""The GGUF -> safetensors cache: built once, reused, rebuilt when partial or corrupt.

The fast tests swap the (30 s) dequantization for a converter that writes the tiny model, so
they test the cache logic itself; the slow test converts the real embedded GGUF.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tempscope.engine import gguf_cache
from tempscope.engine.backend import Backend
from tempscope.engine.gguf_cache import CACHE_MARKER
from tempscope.engine.loader import load_model as _load_model
from tempscope.errors import ModelLoadError
from tests.tiny_gguf import write_tiny_gguf
from tests.tiny_model import save_tiny


def load_model(*args: Any, **kwargs: Any) -> Backend:
    """The cache belongs to the torch engine (llama.cpp reads GGUF files as they are)."""
    return _load_model(*args, engine="torch", **kwargs)


@pytest.fixture
def fake_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[Path]]:
    """A stand-in .gguf file, a cache in tmp_path, and a converter that records its calls."""
    monkeypatch.setenv("TEMPSCOPE_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.Q4.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    calls: list[Path] = []

    def convert(src: Path, out: Path) -> None:
        calls.append(src)
        save_tiny(out)

    monkeypatch.setattr(gguf_cache, "convert_gguf", convert)
    return gguf, calls


def test_first_load_converts_second_reads_cache(fake_gguf: tuple[Path, list[Path]]) -> None:
    gguf, calls = fake_gguf
    first = load_model(str(gguf), device="cpu")
    assert first.converted and first.source == "gguf" and len(calls) == 1
    entry = first.cache_path
    assert entry is not None and entry.parent == gguf_cache.cache_root() / "models"
    assert entry.name.startswith("tiny.Q4-")
    marker = json.loads((entry / CACHE_MARKER).read_text())
    assert "model.safetensors" in marker["files"] and "tokenizer.json" in marker["files"]
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # no temp folder left

    second = load_model(str(gguf), device="cpu")
    assert not second.converted and len(calls) == 1 and second.cache_path == entry
    ids = torch.tensor([[1, 2, 3]])
    with torch.inference_mode():
        a = first.model(input_ids=ids).logits
        b = second.model(input_ids=ids).logits
    assert torch.equal(a, b)


def test_truncated_weights_are_rebuilt(fake_gguf: tuple[Path, list[Path]]) -> None:
    gguf, calls = fake_gguf
    entry = load_model(str(gguf)).cache_path
    assert entry is not None
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a partial copy, say
    again = load_model(str(gguf))
    assert again.converted and len(calls) == 2
    assert gguf_cache.cache_is_complete(entry)


def test_missing_marker_is_rebuilt(fake_gguf: tuple[Path, list[Path]]) -> None:
    gguf, calls = fake_gguf
    entry = load_model(str(gguf)).cache_path
    assert entry is not None
    (entry / CACHE_MARKER).unlink()  # e.g. killed before the marker was written
    assert not gguf_cache.cache_is_complete(entry)
    assert load_model(str(gguf)).converted and len(calls) == 2


def test_corrupt_file_with_right_size_is_rebuilt(fake_gguf: tuple[Path, list[Path]]) -> None:
    gguf, calls = fake_gguf
    entry = load_model(str(gguf)).cache_path
    assert entry is not None
    weights = entry / "model.safetensors"
    weights.write_bytes(b"\xff" * weights.stat().st_size)  # sizes match, content garbage
    assert gguf_cache.cache_is_complete(entry)  # the marker alone cannot tell...
    assert load_model(str(gguf)).converted and len(calls) == 2  # ...but loading can


def test_changed_gguf_gets_a_new_entry(fake_gguf: tuple[Path, list[Path]]) -> None:
    gguf, calls = fake_gguf
    old = load_model(str(gguf)).cache_path
    gguf.write_bytes(b"GGUF stand-in, a newer version")
    new = load_model(str(gguf)).cache_path
    assert new != old and len(calls) == 2


def test_the_same_file_installed_again_finds_its_entry(
        fake_gguf: tuple[Path, list[Path]]) -> None:
    """A reinstall (a new virtual environment, a fresh clone) writes the same bytes at another
    time, often at another path: the entry is keyed by the contents, so it is found again."""
    import os

    gguf, calls = fake_gguf
    old = load_model(str(gguf)).cache_path
    again = gguf.parent / "venv2" / gguf.name
    again.parent.mkdir()
    again.write_bytes(gguf.read_bytes())
    os.utime(again, (1_000_000_000, 1_000_000_000))
    found = load_model(str(again))
    assert found.cache_path == old and not found.converted and len(calls) == 1
    gguf.write_bytes(gguf.read_bytes()[:-1] + b"!")  # same size and name, one byte changed
    assert load_model(str(gguf)).cache_path != old and len(calls) == 2


def test_failed_conversion_leaves_no_entry(
    fake_gguf: tuple[Path, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf, _ = fake_gguf

    def broken(src: Path, out: Path) -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise ModelLoadError("could not read GGUF file")

    monkeypatch.setattr(gguf_cache, "convert_gguf", broken)
    with pytest.raises(ModelLoadError, match="could not read GGUF"):
        load_model(str(gguf))
    assert list((gguf_cache.cache_root() / "models").iterdir()) == []


def test_folder_holding_one_gguf_loads_it(fake_gguf: tuple[Path, list[Path]]) -> None:
    gguf, calls = fake_gguf
    m = load_model(str(gguf.parent))
    assert m.source == "gguf" and calls == [gguf]


def test_cached_models_lists_entries_without_loading(fake_gguf: tuple[Path, list[Path]]) -> None:
    gguf, _ = fake_gguf
    load_model(str(gguf))
    (entry,) = gguf_cache.cached_models()
    assert entry["gguf"] == str(gguf)
    assert (entry["parameters"], entry["vocab_size"], entry["layers"]) == (41_888, 257, 2)


def test_bad_gguf_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPSCOPE_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelLoadError, match="could not read GGUF file"):
        load_model(str(bad))
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_real_gguf_converts_once_and_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real conversion (transformers' dequantization) on a tiny GGUF written here."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("TEMPSCOPE_CACHE", str(tmp_path / "cache"))
    path = write_tiny_gguf(tmp_path / "tiny-llama.gguf")
    first = load_model(str(path), device="cpu")
    assert first.converted and first.source == "gguf"
    f = first.facts
    assert (f.architecture, f.vocab_size, f.embedding_dim, f.heads, f.layers) == (
        "LlamaForCausalLM", 257, 32, 4, 2
    )
    # embed 257*32 + head 257*32 + 2 * (2 norms 32 + 4 attn 32*32 + 3 mlp 32*64) + norm 32
    assert f.parameters == 2 * 257 * 32 + 2 * (2 * 32 + 4 * 32 * 32 + 3 * 32 * 64) + 32
    assert first.encode("cat") == [first.tokenizer.convert_tokens_to_ids(c) for c in "cat"]
    assert first.eos_token_ids == [256]

    def no_conversion(src: Path, out: Path) -> None:
        raise AssertionError("the second load must read the cache")

    monkeypatch.setattr(gguf_cache, "convert_gguf", no_conversion)
    second = load_model(str(path), device="cpu")
    assert not second.converted
    direct = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    ids = torch.tensor([second.encode("The cat")])
    with torch.inference_mode():
        cached = second.model(input_ids=ids).logits
        fresh = direct(input_ids=ids).logits
    torch.testing.assert_close(cached, fresh)  # the cache holds the same weights


def test_unwritable_cache_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("TEMPSCOPE_CACHE", str(blocker))
    path = write_tiny_gguf(tmp_path / "tiny-llama.gguf")
    m = load_model(str(path), device="cpu", dtype="bfloat16")
    assert m.converted and m.cache_path is None and m.dtype == torch.bfloat16
    assert m.facts.vocab_size == 257
