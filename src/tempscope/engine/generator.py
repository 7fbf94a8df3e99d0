"""One interface for every engine: a model on this machine or an OpenAI-compatible server.

The sweep, the studies and the command line ask an engine for the same things: run rows (a
prompt as text, sampler settings, a seed, a token budget) and hand back one
:class:`~tempscope.engine.loop.Sample` per row with its step events; generate prompts x settings
x ``n`` samples; a prompt's next-token views; what it does with a set of sampler settings.
:class:`Generator` is that interface. :class:`LocalGenerator` runs a loaded model
(:func:`tempscope.engine.loop.generate_rows`), :class:`RemoteGenerator` a server
(:func:`tempscope.engine.remote.engine.remote_rows`). Which one runs is chosen once
(:func:`as_generator`, or the CLI's ``--endpoint``); the code above it is the same for both.

What only one of them can do is a question every generator answers: a server does not score
given text (:meth:`Generator.score_texts` gives ``None``) and has no chat template here
(:meth:`Generator.check_prompts` says so); a local model has its context and this machine's
memory checked (:meth:`Generator.check_local`), a server checks its own.

>>> from tempscope.engine.remote.client import RemoteClient
>>> as_generator(RemoteClient("http://127.0.0.1:8000/v1", model="m")).label
'm at http://127.0.0.1:8000/v1'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Self, cast

if TYPE_CHECKING:
    from tempscope.engine.backend import Backend
    from tempscope.engine.loop import Sample, StepEvent
    from tempscope.engine.nexttoken import NextTokenResult, NextTokenView
    from tempscope.engine.remote.client import RemoteClient
    from tempscope.engine.remote.engine import RemoteNextToken
    from tempscope.engine.scoring import TextScore
    from tempscope.sampling import SamplingParams

__all__ = [
    "Generator",
    "LocalGenerator",
    "RemoteGenerator",
    "Row",
    "SettingsCheck",
    "as_generator",
]

StepCallback = Callable[["StepEvent"], None]
ResultCallback = Callable[[int, "Sample"], None]


@dataclass(frozen=True)
class Row:
    """One sample to generate: a prompt as text, its sampler settings and seed, its budget."""

    prompt: str
    params: SamplingParams
    seed: int | None = None  # None = params.seed (None = unseeded)
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()  # strings that end the row; the text stops before them
    stop_at_newline: bool = False


@dataclass(frozen=True)
class SettingsCheck:
    """What an engine does with a set of sampler settings (:meth:`Generator.check_settings`)."""

    ignored: list[str] = field(default_factory=list)  # settings it will not apply
    refused: dict[str, str] = field(default_factory=dict)  # setting -> why, the server's words
    logprobs_raw: bool = True  # step log-probs are raw (T = 1, no samplers): mean log p holds
    manifest: dict[str, Any] = field(default_factory=dict)  # what a sweep's manifest adds


class Generator(Protocol):
    """What the sweep, the studies and the CLI need of an engine, local or remote."""

    @property
    def name(self) -> str:
        """The model, as a sweep's manifest records it."""

    @property
    def label(self) -> str:
        """The model and where it runs, as a study records it (``model at URL`` remotely)."""

    @property
    def engine(self) -> str:
        """``torch``, ``llama.cpp`` or ``remote``."""

    @property
    def reproducible(self) -> bool | None:
        """Whether a row's tokens never depend on the rows beside it; ``None``: the server
        decides (``tempscope serve``: yes; others: unknown)."""

    @property
    def eos_token_ids(self) -> list[int]:
        """The tokens that end a row; ``[]`` where they are not known (a server)."""

    @property
    def tokenizer(self) -> Backend:
        """The local model whose tokens measure text (a study cuts its passages with it): the
        model itself, or for a server a stand-in (the embedded model unless one was given)."""

    def check_prompts(self, prompts: Sequence[str], *, chat: bool = False) -> None:
        """Raise ``ValueError`` before any work when a prompt cannot run here (it encodes to
        no tokens; a chat template on a server)."""

    def check_local(self, check: Callable[[Backend], None]) -> None:
        """Run ``check`` (the model's context, this machine's memory) on the model when it runs
        on this machine; a server checks its own work, so there it is skipped."""

    def check_settings(self, grid: Mapping[Any, SamplingParams]) -> SettingsCheck:
        """What this engine does with every setting in ``grid`` (keyed by config name, or by
        ``(config, temperature)`` as a sweep keys it)."""

    def run(self, rows: Sequence[Row], *, chat: bool = False, top_alternatives: int = 5,
            on_step: StepCallback | None = None,
            on_result: ResultCallback | None = None,
            max_rows: int | None = None) -> list[Sample]:
        """Generate ``rows``: one :class:`~tempscope.engine.loop.Sample` per row, in order.

        ``on_step`` sees every step event; ``on_result`` gets ``(row index, sample)`` as each
        row finishes (a local model: the step it ends; a server: as each answer arrives), so
        a caller can save it at once. Callbacks never run concurrently. ``max_rows``: most
        rows a local model decodes at once (as one ends the next takes its place).
        """

    def generate(self, prompts: str | Sequence[str],
                 params: SamplingParams | Sequence[SamplingParams], *, n: int = 1,
                 max_new_tokens: int = 64, stop: str | Sequence[str] | None = None,
                 stop_at_newline: bool = False, seed: int | None = None, chat: bool = False,
                 on_step: StepCallback | None = None, top_alternatives: int = 5,
                 processed: bool = False) -> list[Sample]:
        """:func:`tempscope.generate` on this engine. ``processed``: a server is also asked for
        each step's numbers after its samplers (a second request per sample, where it can
        give them); a local model always has them."""

    def next_token(self, prompt: str, temperatures: Sequence[float], *, top: int = 10,
                   seed: int | None = None, chat: bool = False,
                   params: SamplingParams | None = None) -> NextTokenView:
        """The next-token views of ``prompt`` at each temperature: over the whole vocabulary
        locally; from a server, what its log-probabilities give (every token on llama-server,
        the top-N elsewhere)."""

    def score_texts(self, prompts: Sequence[str],
                    texts: Sequence[str]) -> list[TextScore] | None:
        """Each text's log-likelihood after its prompt
        (:func:`tempscope.engine.scoring.score_texts`); ``None`` where the engine cannot score
        given text (a server)."""

    def describe(self, sample: Sample) -> dict[str, Any]:
        """Fields a sample's JSON adds for this engine: ``{}`` locally; for a server
        ``{"remote": ...}``: the settings it refused, those sent, whether log-probs are raw."""

    def stats(self) -> str | None:
        """One line on what the transport went through (requests retried), or ``None``."""

    def close(self) -> None:
        """Free what the generator opened (a server's connections); the model stays loaded."""


class _Closing:
    """``with generator:`` closes it at the end."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


class LocalGenerator(_Closing):
    """A model loaded on this machine (:func:`tempscope.load_model`) as a :class:`Generator`."""

    def __init__(self, model: Backend) -> None:
        self.model = model

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def label(self) -> str:
        return self.model.name

    @property
    def engine(self) -> str:
        return self.model.engine

    @property
    def reproducible(self) -> bool | None:
        return self.model.reproducible

    @property
    def eos_token_ids(self) -> list[int]:
        return list(self.model.eos_token_ids)

    @property
    def tokenizer(self) -> Backend:
        return self.model

    def _encode(self, prompt: str, chat: bool) -> list[int]:
        ids = self.model.encode(prompt, chat=chat)
        if not ids:
            raise ValueError(f"prompt {prompt!r} encodes to no tokens: give a longer prompt")
        return ids

    def check_prompts(self, prompts: Sequence[str], *, chat: bool = False) -> None:
        for p in dict.fromkeys(prompts):
            self._encode(p, chat)

    def check_local(self, check: Callable[[Backend], None]) -> None:
        check(self.model)

    def check_settings(self, grid: Mapping[Any, SamplingParams]) -> SettingsCheck:
        return SettingsCheck()  # every sampler runs here, on raw log-probabilities

    def run(self, rows: Sequence[Row], *, chat: bool = False, top_alternatives: int = 5,
            on_step: StepCallback | None = None,
            on_result: ResultCallback | None = None,
            max_rows: int | None = None) -> list[Sample]:
        from tempscope.engine.loop import RowResult, RowSpec, Sample, generate_rows

        encoded = {p: self._encode(p, chat) for p in dict.fromkeys(r.prompt for r in rows)}
        specs = [RowSpec(prompt_ids=encoded[r.prompt], params=r.params, seed=r.seed,
                         max_new_tokens=r.max_new_tokens, stop=list(r.stop),
                         stop_at_newline=r.stop_at_newline) for r in rows]
        def sample(i: int, r: RowResult) -> Sample:
            row = rows[i]
            return Sample(token_ids=r.token_ids, text=r.text, finish_reason=r.finish_reason,
                          steps=r.steps, row=i, prompt=row.prompt, params=row.params,
                          seed=row.seed if row.seed is not None else row.params.seed,
                          stop_text=r.stop_text)

        def ended(i: int, r: RowResult) -> None:
            if on_result is not None:
                on_result(i, sample(i, r))

        results = generate_rows(self.model, specs, on_step=on_step,
                                top_alternatives=top_alternatives, max_rows=max_rows,
                                on_result=ended)
        return [sample(i, r) for i, r in enumerate(results)]

    def generate(self, prompts: str | Sequence[str],
                 params: SamplingParams | Sequence[SamplingParams], *, n: int = 1,
                 max_new_tokens: int = 64, stop: str | Sequence[str] | None = None,
                 stop_at_newline: bool = False, seed: int | None = None, chat: bool = False,
                 on_step: StepCallback | None = None, top_alternatives: int = 5,
                 processed: bool = False) -> list[Sample]:
        from tempscope.engine.loop import generate

        return generate(self.model, prompts, params, n=n, max_new_tokens=max_new_tokens,
                        stop=stop, stop_at_newline=stop_at_newline, seed=seed, chat=chat,
                        on_step=on_step, top_alternatives=top_alternatives)

    def next_token(self, prompt: str, temperatures: Sequence[float], *, top: int = 10,
                   seed: int | None = None, chat: bool = False,
                   params: SamplingParams | None = None) -> NextTokenResult:
        from tempscope.engine.nexttoken import next_token

        return next_token(self.model, prompt, temperatures, top=top, seed=seed, chat=chat,
                          params=params)

    def score_texts(self, prompts: Sequence[str], texts: Sequence[str]) -> list[TextScore]:
        from tempscope.engine.scoring import score_texts

        return score_texts(self.model, prompts, texts)

    def describe(self, sample: Sample) -> dict[str, Any]:
        return {}

    def stats(self) -> str | None:
        return None

    def close(self) -> None:
        pass  # the model belongs to whoever loaded it


class RemoteGenerator(_Closing):
    """An OpenAI-compatible server (:class:`~tempscope.engine.remote.client.RemoteClient`) as a
    :class:`Generator`: one request per row, ``client.concurrency`` at a time.

    Args:
        client: the server.
        tokenizer: the local model (or its name) whose tokens stand in for the server's where
            text must be measured in tokens; ``None`` = the embedded model; a name is loaded
            on the CPU when first needed.
    """

    def __init__(self, client: RemoteClient, *, tokenizer: Backend | str | None = None) -> None:
        self.client = client
        self._tokenizer = tokenizer

    @property
    def name(self) -> str:
        return self.client.model

    @property
    def label(self) -> str:
        return f"{self.client.model} at {self.client.base_url}"

    @property
    def engine(self) -> str:
        return "remote"

    @property
    def reproducible(self) -> bool | None:
        return None

    @property
    def eos_token_ids(self) -> list[int]:
        return []

    @property
    def tokenizer(self) -> Backend:
        if self._tokenizer is None or isinstance(self._tokenizer, str):
            from tempscope.engine.loader import load_model

            # Only its tokenizer is used: the CPU is enough, and leaves a GPU to others.
            self._tokenizer = load_model(self._tokenizer, device="cpu")
        return self._tokenizer

    def check_prompts(self, prompts: Sequence[str], *, chat: bool = False) -> None:
        if chat:
            raise ValueError("a chat template cannot be applied with a remote endpoint (the "
                             "server's is not known here): put the template into the prompt "
                             "yourself, or run on a local model")

    def check_local(self, check: Callable[[Backend], None]) -> None:
        pass  # the server holds the model: its context and memory are its own to check

    def check_settings(self, grid: Mapping[Any, SamplingParams]) -> SettingsCheck:
        from tempscope.engine.remote.engine import check_settings

        found = check_settings(self.client, grid)
        return SettingsCheck(ignored=found["ignored"], refused=found["refused"],
                             logprobs_raw=found["logprobs_raw"],
                             manifest={"remote": {"endpoint": self.client.base_url, **found}})

    def run(self, rows: Sequence[Row], *, chat: bool = False, top_alternatives: int = 5,
            on_step: StepCallback | None = None,
            on_result: ResultCallback | None = None,
            max_rows: int | None = None) -> list[Sample]:
        from tempscope.engine.remote.engine import RemoteRow, remote_rows

        self.check_prompts([], chat=chat)
        requests = [RemoteRow(r.prompt, r.params, r.seed if r.seed is not None else r.params.seed,
                              r.max_new_tokens, r.stop + (("\n",) if r.stop_at_newline else ()))
                    for r in rows]
        return list(remote_rows(self.client, requests, top_alternatives=top_alternatives,
                                on_step=on_step, on_result=on_result))

    def generate(self, prompts: str | Sequence[str],
                 params: SamplingParams | Sequence[SamplingParams], *, n: int = 1,
                 max_new_tokens: int = 64, stop: str | Sequence[str] | None = None,
                 stop_at_newline: bool = False, seed: int | None = None, chat: bool = False,
                 on_step: StepCallback | None = None, top_alternatives: int = 5,
                 processed: bool = False) -> list[Sample]:
        from tempscope.engine.remote.engine import remote_generate

        self.check_prompts([], chat=chat)
        return list(remote_generate(self.client, prompts, params, n=n,
                                    max_new_tokens=max_new_tokens, stop=stop,
                                    stop_at_newline=stop_at_newline, seed=seed,
                                    logprobs=top_alternatives, processed=processed,
                                    on_step=on_step))

    def next_token(self, prompt: str, temperatures: Sequence[float], *, top: int = 10,
                   seed: int | None = None, chat: bool = False,
                   params: SamplingParams | None = None) -> RemoteNextToken:
        from tempscope.engine.remote.engine import remote_next_token

        self.check_prompts([prompt], chat=chat)
        return remote_next_token(self.client, prompt, temperatures, top=top, seed=seed,
                                 params=params)

    def score_texts(self, prompts: Sequence[str], texts: Sequence[str]) -> None:
        return None  # completions APIs return log-probabilities of what they generate only

    def describe(self, sample: Sample) -> dict[str, Any]:
        from tempscope.engine.remote.engine import RemoteSample

        if not isinstance(sample, RemoteSample):  # not one of this generator's samples
            return {}
        return {"remote": {"ignored_settings": sample.ignored,
                           "logprobs_raw": sample.logprobs_raw, "sent_settings": sample.sent}}

    def stats(self) -> str | None:
        s = self.client.stats
        if not s.retries:
            return None
        return (f"{s.requests} requests, {s.retries} retried "
                f"({', '.join(sorted(set(s.retried_statuses)))})")

    def close(self) -> None:
        self.client.close()


def as_generator(model: Generator | Backend | RemoteClient | str | None, *,
                 tokenizer: Backend | str | None = None) -> Generator:
    """The generator for ``model``: a :class:`RemoteGenerator` for a
    :class:`~tempscope.engine.remote.client.RemoteClient` (``tokenizer``: its stand-in tokenizer); a
    :class:`LocalGenerator` for a loaded model, or for :func:`tempscope.load_model` of a name
    or path (``None`` = the embedded model); any other :class:`Generator` as it is."""
    from tempscope.engine.remote.client import RemoteClient

    if isinstance(model, RemoteClient):
        return RemoteGenerator(model, tokenizer=tokenizer)
    if model is None or isinstance(model, str):
        from tempscope.engine.loader import load_model

        return LocalGenerator(load_model(model))
    if hasattr(model, "open_session"):  # the Backend protocol's door to decoding
        return LocalGenerator(cast("Backend", model))
    return model
