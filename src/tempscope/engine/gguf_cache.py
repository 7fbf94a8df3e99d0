"""The GGUF -> safetensors cache: dequantize a GGUF file once, load it fast ever after.

transformers dequantizes a GGUF file on every load (~30 s for the embedded model), so the first
load saves the float32 weights (safetensors) and the tokenizer in a user cache folder: in
order ``$TEMPSCOPE_CACHE``, ``$XDG_CACHE_HOME/tempscope``, ``~/.cache/tempscope``. Each GGUF
file gets ``models/<stem>-<key>/``, where ``key`` hashes its name and its contents (SHA-256:
~0.1 s for the embedded model), so a changed file gets a new entry and the same file installed
again (a new virtual environment, a fresh clone) finds the one it had. An entry is written in
a temporary sibling folder and renamed into place, and is used only when its completion
marker lists every file at the size written and the weights load; a partial or corrupt entry
is removed and rebuilt. When the cache cannot be written (read-only or full disk) the model
still loads, slowly, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tempscope.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

CACHE_MARKER = "tempscope-cache.json"
CACHE_FORMAT = 1  # bump when the layout of a cache entry changes


def cache_root() -> Path:
    """The tempscope cache folder: ``$TEMPSCOPE_CACHE``, ``$XDG_CACHE_HOME/tempscope`` or
    ``~/.cache/tempscope``."""
    if os.environ.get("TEMPSCOPE_CACHE"):
        return Path(os.environ["TEMPSCOPE_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "tempscope"
    return Path.home() / ".cache" / "tempscope"


def cache_entry(gguf: Path) -> Path:
    """The cache folder for the converted weights of ``gguf`` (it may not exist yet)."""
    with gguf.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    ident = f"{gguf.name}\0{digest}\0{CACHE_FORMAT}"
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return cache_root() / "models" / f"{gguf.stem}-{key}"


def cache_is_complete(entry: Path) -> bool:
    """True when ``entry`` holds a completion marker and every file it lists, at its size."""
    try:
        marker = json.loads((entry / CACHE_MARKER).read_text())
        files: dict[str, int] = marker["files"]
        return marker.get("format") == CACHE_FORMAT and bool(files) and all(
            (entry / name).stat().st_size == size for name, size in files.items()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def load_gguf(
    gguf: Path, *, device: torch.device, dtype: torch.dtype
) -> tuple[Any, PreTrainedTokenizerBase, Path | None, bool]:
    """Load ``gguf`` through its safetensors cache, building the cache entry when needed.

    Returns:
        ``(model, tokenizer, entry, converted)``: the model in eval mode on ``device`` in
        ``dtype``; the cache folder it came from (``None`` when the cache could not be
        written); whether this call dequantized the GGUF file.
    """
    entry = cache_entry(gguf)
    loaded = _read_cache(entry, device, dtype) if cache_is_complete(entry) else None
    if loaded is not None:
        return loaded[0], loaded[1], entry, False
    try:
        if entry.exists():
            log.warning("cache entry %s is incomplete or corrupt: rebuilding it", entry)
            shutil.rmtree(entry)
        _build_cache(gguf, entry)
    except OSError as exc:
        # A read-only or full disk must not stop the user: convert in memory, every time.
        log.warning("cannot write the model cache in %s (%s): loading without it, which is "
                    "slow every time; set TEMPSCOPE_CACHE to a writable folder", entry.parent,
                    exc.strerror or exc)
        model, tokenizer = dequantize_gguf(gguf)
        return model.to(device=device, dtype=dtype).eval(), tokenizer, None, True
    loaded = _read_cache(entry, device, dtype)
    if loaded is None:
        raise ModelLoadError(
            f"could not read the converted weights of {gguf.name!r} back from {entry}: remove "
            "that folder and try again, or set TEMPSCOPE_CACHE to another folder"
        )
    return loaded[0], loaded[1], entry, True


def _read_cache(
    entry: Path, dev: torch.device, dt: torch.dtype
) -> tuple[Any, PreTrainedTokenizerBase] | None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(entry, local_files_only=True)
        model: Any = AutoModelForCausalLM.from_pretrained(entry, dtype=dt, local_files_only=True)
    except Exception as exc:  # any failure here means a damaged entry: rebuild, don't crash
        log.warning("could not load the cached model in %s (%s)", entry, exc)
        return None
    return model.to(dev).eval(), tokenizer


def dequantize_gguf(gguf: Path) -> tuple[Any, PreTrainedTokenizerBase]:
    """Read ``gguf`` with transformers: a float32 model (on the CPU) and its tokenizer.
    Slow: ~30 s for the embedded model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to float32 (one time when cached; ~30 s for the embedded model)",
             gguf.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model: Any = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    except Exception as exc:  # transformers raises many kinds on a bad or unsupported GGUF
        raise ModelLoadError(
            f"could not read GGUF file {str(gguf)!r}: {exc}. Check that the file is a "
            "complete GGUF of an architecture transformers supports (llama, qwen2, gpt2, "
            "gemma3, ...), or use a model folder, a hub name, or the embedded default"
        ) from exc
    # The weights are plain float32 now, but transformers still marks the model as "quantized
    # with gguf" and refuses to save or move it; clear the marks (see NOTES.md).
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` and save float32 safetensors + tokenizer in ``out`` (a Hugging
    Face model folder)."""
    model, tokenizer = dequantize_gguf(gguf)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_cache(gguf: Path, entry: Path) -> None:
    """Convert into a temporary sibling folder, write the marker last, then rename."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".tmp", dir=entry.parent))
    try:
        convert_gguf(gguf, tmp)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        marker = {"format": CACHE_FORMAT, "gguf": str(gguf), "files": files}
        (tmp / CACHE_MARKER).write_text(json.dumps(marker, indent=1))
        try:
            os.rename(tmp, entry)
        except OSError:
            # Another process finished the same entry first; theirs is as good as ours.
            if not cache_is_complete(entry):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_models() -> list[dict[str, Any]]:
    """Complete entries of the tempscope cache, read without loading any weights: folder,
    source GGUF, size on disk, and the facts its config.json and safetensors header give."""
    root = cache_root() / "models"
    found: list[dict[str, Any]] = []
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not cache_is_complete(entry):
            continue
        marker = json.loads((entry / CACHE_MARKER).read_text())
        info: dict[str, Any] = {
            "path": str(entry),
            "gguf": marker.get("gguf"),
            "bytes": sum(int(v) for v in marker["files"].values()),
        }
        try:
            cfg = json.loads((entry / "config.json").read_text())
            cfg = cfg.get("text_config", cfg)
            info.update(
                architecture=(cfg.get("architectures") or ["?"])[0],
                vocab_size=cfg.get("vocab_size"),
                embedding_dim=cfg.get("hidden_size", cfg.get("n_embd")),
                heads=cfg.get("num_attention_heads", cfg.get("n_head")),
                layers=cfg.get("num_hidden_layers", cfg.get("n_layer")),
                context_length=cfg.get("max_position_embeddings", cfg.get("n_positions")),
                parameters=_safetensors_parameters(entry),
            )
        except (OSError, ValueError, AttributeError):
            pass
        found.append(info)
    return found


def _safetensors_parameters(folder: Path) -> int:
    """Number of values in every safetensors file in ``folder``, from the headers only."""
    total = 0
    for file in folder.glob("*.safetensors"):
        with file.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
        for key, meta in header.items():
            if key != "__metadata__":
                n = 1
                for d in meta["shape"]:
                    n *= int(d)
                total += n
    return total
