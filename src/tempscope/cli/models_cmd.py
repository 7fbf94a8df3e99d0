"""``tempscope models`` lists the embedded default and the cached models; ``tempscope info
[MODEL]`` loads one model and prints its facts."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tempscope.cli.common import print_table
from tempscope.cli.model_args import add_model_arguments, load_from_args


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "models",
        help="list the embedded default model and the models in the cache",
        description="List the embedded default model (and whether its converted weights are "
        "cached yet), the models in tempscope's cache, and causal LMs in the Hugging Face "
        "cache. Reads no weights.",
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=run)

    i = sub.add_parser(
        "info",
        help="load a model and print its facts (parameters, vocabulary, sizes, tokens)",
        description="Load MODEL (default: the embedded SmolLM2-135M-Instruct) and print its "
        "parameter count, vocabulary size, embedding width, heads, layers, context length, "
        "special tokens, device and dtype.",
    )
    add_model_arguments(i, positional=True)
    i.add_argument("--json", action="store_true", help="print the facts as JSON")
    i.set_defaults(func=run_info)


def list_models() -> list[dict[str, Any]]:
    """The embedded default first, then tempscope's cache entries, then hub-cache models."""
    from tempscope.engine.gguf_cache import cache_entry, cached_models
    from tempscope.engine.loader import EMBEDDED_NAME, embedded_gguf_path
    from tempscope.errors import ModelLoadError

    rows: list[dict[str, Any]] = []
    embedded_entry = None
    try:
        gguf = embedded_gguf_path()
        embedded_entry = str(cache_entry(gguf))
        cached = {c["path"]: c for c in cached_models()}
        row: dict[str, Any] = {"name": EMBEDDED_NAME, "source": "embedded",
                               "gguf": str(gguf), "cached": embedded_entry in cached}
        row.update({k: v for k, v in cached.get(embedded_entry, {}).items() if k != "gguf"})
        rows.append(row)
    except ModelLoadError as exc:
        rows.append({"name": EMBEDDED_NAME, "source": "embedded", "error": str(exc)})
    for c in cached_models():
        if c["path"] != embedded_entry:
            rows.append({"name": c.get("gguf") or c["path"], "source": "gguf", "cached": True,
                         **c})
    rows.extend(_hub_cache())
    return rows


def _hub_cache() -> list[dict[str, Any]]:
    """Model repositories in the Hugging Face cache (names and sizes only)."""
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
    except Exception:  # no cache folder, or one we cannot read: nothing to list
        return []
    return [
        {"name": repo.repo_id, "source": "hub", "cached": True, "bytes": repo.size_on_disk,
         "path": str(repo.repo_path)}
        for repo in sorted(info.repos, key=lambda r: r.repo_id)
        if repo.repo_type == "model"
    ]


def run(args: argparse.Namespace) -> int:
    rows = list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [
        [
            r["name"], r["source"], "yes" if r.get("cached") else "no",
            _count(r.get("parameters")), _count(r.get("vocab_size")), _count(r.get("layers")),
            _size(r.get("bytes")),
        ]
        for r in rows
    ]
    print_table("Models", ["model", "source", "cached", "params", "vocab", "layers", "disk"],
                table)
    from tempscope.engine.gguf_cache import cache_root

    print(f"cache: {cache_root()} (set TEMPSCOPE_CACHE to move it)")
    for r in rows:
        if "error" in r:
            print(f"{r['name']}: {r['error']}")
        elif r["source"] == "embedded" and not r.get("cached"):
            print("the embedded model is not converted yet: the first load takes ~30 s, "
                  "later loads a few seconds")
    print("details: tempscope info [MODEL]")
    return 0


def run_info(args: argparse.Namespace) -> int:
    model = load_from_args(args)
    facts = model.facts
    if args.json:
        print(json.dumps({**facts.to_dict(), "eos_token_ids": model.eos_token_ids,
                          "cache_path": str(model.cache_path) if model.cache_path else None},
                         indent=2, ensure_ascii=False))
        return 0
    special = ", ".join(
        f"{k.removesuffix('_token')} {v!r} ({facts.special_token_ids.get(k, '?')})"
        for k, v in facts.special_tokens.items()
    )
    rows = [
        ["name", facts.name],
        ["source", facts.source],
        ["engine", facts.engine],
        ["architecture", facts.architecture],
        ["parameters", f"{facts.parameters:,} ({facts.parameters / 1e6:.1f}M)"],
        ["vocabulary", f"{facts.vocab_size:,} tokens"],
        ["embedding width", f"{facts.embedding_dim:,}"],
        ["attention heads", str(facts.heads)],
        ["layers", str(facts.layers)],
        ["context length", f"{facts.context_length:,} tokens"],
        ["special tokens", special or "none"],
        ["end-of-sequence ids", ", ".join(map(str, model.eos_token_ids)) or "none"],
        ["chat template", "yes" if facts.has_chat_template else "no"],
        ["device", facts.device],
        ["dtype", facts.dtype],
    ]
    if model.cache_path is not None:
        rows.append(["converted weights", str(model.cache_path)])
    print_table(f"Model {facts.name}", ["fact", "value"], rows)
    return 0


def _count(value: object) -> str:
    if isinstance(value, int) and value >= 1_000_000:
        return f"{value / 1e6:.1f}M"
    return f"{value:,}" if isinstance(value, int) else "-"


def _size(value: object) -> str:
    if not isinstance(value, int):
        return "-"
    return f"{value / 2**20:.0f} MiB" if value >= 2**20 else f"{value / 1024:.0f} KiB"
