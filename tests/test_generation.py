"""The generation engine: parity with transformers, seeds, stop rules, rows leaving the batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tempscope.engine.loader import LoadedModel, load_model
from tempscope.engine.loop import RowSpec, StepEvent, derive_seed, generate, generate_rows
from tempscope.sampling import SamplingParams
from tests.tiny_model import build_tokenizer

GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> LoadedModel:
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def varied(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A tiny GPT-2 with default init: its greedy output does not just repeat one byte, so
    greedy parity checks real decisions (the shared fixture's sharpened embeddings make greedy
    repeat the last token)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(3)
    config = GPT2Config(vocab_size=257, n_positions=128, n_embd=48, n_layer=2, n_head=4,
                        bos_token_id=256, eos_token_id=256, pad_token_id=256,
                        tie_word_embeddings=False, initializer_range=0.5)
    path = tmp_path_factory.mktemp("varied-gpt2")
    GPT2LMHeadModel(config).eval().save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return load_model(str(path))


def ids_of(model: LoadedModel, text: str) -> list[int]:
    return [int(i) for i in model.tokenizer(text, add_special_tokens=False)["input_ids"]]


def hf_greedy(model: LoadedModel, prompt_ids: list[int], tokens: int) -> list[int]:
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = model.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                   max_new_tokens=tokens, pad_token_id=256)
    return [int(t) for t in out[0, len(prompt_ids):]]


# ---------------------------------------------------------------- parity with transformers

@pytest.mark.parametrize("which", ["tiny", "varied"])
def test_greedy_equals_transformers_generate_in_one_padded_batch(
    which: str, request: pytest.FixtureRequest
) -> None:
    model: LoadedModel = request.getfixturevalue(which)
    prompts = ["The cat slept on the", "Hi", "A much longer prompt, to force left padding"]
    samples = generate(model, prompts, GREEDY, max_new_tokens=24)
    distinct = set()
    for prompt, sample in zip(prompts, samples, strict=True):
        expected = hf_greedy(model, ids_of(model, prompt), 24)
        n = sample.n_tokens
        assert sample.token_ids == expected[:n]
        assert sample.finish_reason == ("eos" if n < 24 else "length")
        distinct.update(sample.token_ids)
    if which == "varied":
        assert len(distinct) > 3  # the check covered real decisions, not one repeated byte


@pytest.mark.slow
def test_greedy_equals_transformers_generate_on_the_embedded_model() -> None:
    model = load_model(engine="torch")
    prompts = ["The cat slept on the", "Write a haiku about the sea."]
    samples = generate(model, prompts, GREEDY, max_new_tokens=32)
    for prompt, sample in zip(prompts, samples, strict=True):
        ids = torch.tensor([model.encode(prompt)])
        with torch.inference_mode():
            out = model.model.generate(ids, attention_mask=torch.ones_like(ids),
                                       do_sample=False, max_new_tokens=32,
                                       pad_token_id=model.eos_token_ids[0])
        expected = [int(t) for t in out[0, ids.shape[1]:]]
        assert sample.token_ids == expected[:sample.n_tokens]
        assert len(expected) == sample.n_tokens
    assert samples[0].text.startswith(" couch")


# ---------------------------------------------------------------- seeds

def test_a_seeded_row_gives_the_same_tokens_alone_and_in_any_batch(tiny: LoadedModel) -> None:
    hot = SamplingParams(temperature=1.5)
    alone = generate(tiny, "Hi", hot, n=3, max_new_tokens=12, seed=11)
    batch = generate(tiny, ["A longer prompt in front", "Hi"],
                     [SamplingParams(temperature=0.7), hot], n=3, max_new_tokens=12, seed=11)
    in_batch = [s for s in batch if s.prompt == "Hi" and s.params == hot]
    assert [s.token_ids for s in in_batch] == [s.token_ids for s in alone]
    assert [s.seed for s in in_batch] == [11, derive_seed(11, 1), derive_seed(11, 2)]
    # different samples differ; a different seed differs
    assert len({tuple(s.token_ids) for s in alone}) == 3
    other = generate(tiny, "Hi", hot, max_new_tokens=12, seed=12)
    assert other[0].token_ids != alone[0].token_ids


def test_params_seed_is_used_when_no_seed_is_given(tiny: LoadedModel) -> None:
    a = generate(tiny, "Hi", SamplingParams(temperature=1.0, seed=5), max_new_tokens=8)
    b = generate(tiny, "Hi", SamplingParams(temperature=1.0), max_new_tokens=8, seed=5)
    assert a[0].token_ids == b[0].token_ids


def test_derive_seed() -> None:
    assert derive_seed(7, 0) == 7
    assert derive_seed(None, 5) is None
    seeds = {derive_seed(7, i) for i in range(100)}
    assert len(seeds) == 100
    assert all(s is not None and 0 <= s < 2**63 for s in seeds)


def test_rows_are_ordered_prompt_major_then_params_then_sample(tiny: LoadedModel) -> None:
    params = [SamplingParams(temperature=0.5), SamplingParams(temperature=2.0)]
    samples = generate(tiny, ["a", "b"], params, n=2, max_new_tokens=2, seed=0)
    assert [(s.prompt_index, s.params_index, s.sample_index) for s in samples] == [
        (p, q, i) for p in range(2) for q in range(2) for i in range(2)
    ]
    assert [s.row for s in samples] == list(range(8))
    assert [s.prompt for s in samples] == ["a"] * 4 + ["b"] * 4


# ---------------------------------------------------------------- stop rules

def abc(model: LoadedModel, *extra: str) -> SamplingParams:
    """Sampling that stays within a few known single-byte tokens."""
    bias = {ids_of(model, ch)[0]: 100.0 for ch in ("a", "b", "c", *extra)}
    return SamplingParams(temperature=1.0, logit_bias=bias)


def test_a_stop_string_split_across_tokens_ends_the_row(tiny: LoadedModel) -> None:
    params = abc(tiny)
    free = generate(tiny, "x", params, max_new_tokens=40, seed=4)[0]
    text = free.text
    assert set(text) <= set("abc") and len(text) == 40
    stop = text[5:8]  # three one-byte tokens: the match spans three steps
    cut = text.find(stop)
    events: list[StepEvent] = []
    row = generate(tiny, "x", params, max_new_tokens=40, seed=4, stop=[stop, "zzz"],
                   on_step=events.append)[0]
    assert row.finish_reason == "stop"
    assert row.stop_text == stop
    assert row.text == text[:cut]
    assert row.token_ids == free.token_ids[:cut + 3]
    assert events[-1].finished == "stop"
    # streaming never shows the stop string: deltas are held back while they could start it
    assert "".join(e.delta for e in events) == row.text


def test_deltas_add_up_to_the_text_when_no_stop_matches(tiny: LoadedModel) -> None:
    events: list[StepEvent] = []
    row = generate(tiny, "x", abc(tiny), max_new_tokens=20, seed=1, stop=["abcabcabc"],
                   on_step=events.append)[0]
    assert row.finish_reason == "length"
    assert "".join(e.delta for e in events) == row.text


def test_newline_ends_the_row(tiny: LoadedModel) -> None:
    params = abc(tiny, "\n")
    free = generate(tiny, "x", params, max_new_tokens=40, seed=2)[0]
    assert "\n" in free.text
    row = generate(tiny, "x", params, max_new_tokens=40, seed=2, stop_at_newline=True)[0]
    assert (row.finish_reason, row.stop_text) == ("stop", "\n")
    assert row.text == free.text[:free.text.index("\n")]


def test_eos_ends_the_row_and_stays_out_of_the_text(tiny: LoadedModel) -> None:
    params = SamplingParams(temperature=0, logit_bias={256: 100.0})
    row = generate(tiny, "x", params, max_new_tokens=10)[0]
    assert (row.finish_reason, row.token_ids, row.text, row.n_tokens) == ("eos", [256], "", 1)
    assert row.steps[0].finished == "eos"
    ignored = generate(tiny, "x", params, max_new_tokens=3, ignore_eos=True)[0]
    assert (ignored.finish_reason, ignored.token_ids) == ("length", [256, 256, 256])


def test_the_token_budget_ends_the_row(tiny: LoadedModel) -> None:
    row = generate(tiny, "x", GREEDY, max_new_tokens=3)[0]
    assert (row.finish_reason, row.n_tokens, len(row.steps)) == ("length", 3, 3)
    assert [s.step for s in row.steps] == [1, 2, 3]


def test_the_context_length_ends_the_row(tiny: LoadedModel) -> None:
    context = tiny.facts.context_length
    row = generate(tiny, "x" * (context - 2), GREEDY, max_new_tokens=10)[0]
    assert (row.finish_reason, row.n_tokens) == ("length", 2)
    with pytest.raises(ValueError, match="shorten it"):
        generate(tiny, "x" * (context + 1), GREEDY, max_new_tokens=1)


# ---------------------------------------------------------------- rows leaving the batch

@pytest.mark.parametrize("reproducible", [True, False])
def test_rows_finishing_early_leave_the_batch_without_changing_the_others(
    tiny: LoadedModel, reproducible: bool,
) -> None:
    eos_now = SamplingParams(temperature=0, logit_bias={256: 100.0})
    hot = SamplingParams(temperature=1.2)
    specs = [
        RowSpec(prompt_ids=ids_of(tiny, "first"), params=hot, seed=1, max_new_tokens=9),
        RowSpec(prompt_ids=ids_of(tiny, "ab"), params=eos_now, max_new_tokens=9),
        RowSpec(prompt_ids=ids_of(tiny, "third one"), params=hot, seed=3, max_new_tokens=2),
        RowSpec(prompt_ids=ids_of(tiny, "x"), params=hot, seed=4, max_new_tokens=6),
    ]
    sizes: list[int] = []
    original = tiny.model.forward

    def counting(*args: Any, **kwargs: Any) -> Any:
        sizes.append(int(kwargs["input_ids"].shape[0]))
        return original(*args, **kwargs)

    tiny.model.forward = counting
    tiny.reproducible = reproducible
    try:
        together = generate_rows(tiny, specs)
        assert [r.finish_reason for r in together] == ["length", "eos", "length", "length"]
        assert [r.n_tokens for r in together] == [9, 1, 2, 6]
        live = [3, 2, 2, 2, 2, 1, 1, 1]  # rows still running at each step after the first
        if reproducible:  # a batch-of-one pass per prompt, then per live row and step
            assert sizes == [1] * (4 + sum(live))
        else:  # one call per step for the whole batch
            assert sizes == [4, *live]
        # finished rows stop costing work
        for spec, result in zip(specs, together, strict=True):
            assert generate_rows(tiny, [spec])[0].token_ids == result.token_ids
    finally:
        del tiny.model.forward
        tiny.reproducible = True


@pytest.mark.parametrize("reproducible", [True, False])
def test_identical_prompts_share_one_prefill(tiny: LoadedModel, reproducible: bool) -> None:
    calls: list[tuple[int, int]] = []
    original = tiny.model.forward

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(tuple(kwargs["input_ids"].shape))
        return original(*args, **kwargs)

    tiny.model.forward = counting
    tiny.reproducible = reproducible
    try:
        samples = generate(tiny, "same prompt", [SamplingParams(temperature=t)
                                                 for t in (0.5, 1, 2)], n=4, max_new_tokens=3,
                           seed=0)
    finally:
        del tiny.model.forward
        tiny.reproducible = True
    steps = [(1, 1)] * 24 if reproducible else [(12, 1), (12, 1)]  # 12 rows, 2 more tokens
    assert calls == [(1, len("same prompt")), *steps]
    assert len(samples) == 12


def test_cancelled_rows_stop(tiny: LoadedModel) -> None:
    seen: dict[int, int] = {}

    def on_step(e: StepEvent) -> None:
        seen[e.row] = e.step

    specs = [RowSpec(prompt_ids=ids_of(tiny, "ab"), params=GREEDY, max_new_tokens=8)
             for _ in range(2)]
    out = generate_rows(tiny, specs, on_step=on_step,
                        is_cancelled=lambda row: row == 1 and seen.get(1, 0) >= 3)
    assert [r.finish_reason for r in out] == ["length", "cancelled"]
    assert [r.n_tokens for r in out] == [8, 3]


# ---------------------------------------------------------------- step events

def test_step_events_carry_raw_and_processed_probabilities(tiny: LoadedModel) -> None:
    events: list[StepEvent] = []
    sample = generate(tiny, "The cat", SamplingParams(temperature=0.5, top_k=3),
                      max_new_tokens=4, seed=0, on_step=events.append, top_alternatives=5)[0]
    assert events == sample.steps
    prompt = ids_of(tiny, "The cat")
    with torch.inference_mode():
        logits = tiny.model(input_ids=torch.tensor([prompt])).logits[0, -1].float()
    raw = torch.log_softmax(logits, -1)
    kept = torch.log_softmax(logits / 0.5, -1)
    top3 = kept.topk(3).indices
    processed = torch.full_like(kept, -torch.inf)
    processed[top3] = kept[top3] - torch.logsumexp(kept[top3], 0)
    first = events[0]
    assert first.token_id in top3.tolist()
    assert first.raw_logprob == pytest.approx(float(raw[first.token_id]), abs=1e-5)
    assert first.logprob == pytest.approx(float(processed[first.token_id]), abs=1e-5)
    assert first.raw_entropy == pytest.approx(float(-(raw.exp() * raw).sum()), abs=1e-4)
    p = processed[top3].exp()
    assert first.entropy == pytest.approx(float(-(p * p.log()).sum()), abs=1e-5)
    assert [a.token_id for a in first.top[:3]] == top3.tolist()
    assert [a.prob for a in first.top[3:]] == [0.0, 0.0]  # removed by top-k, shown by raw p
    assert first.top[3].raw_prob >= first.top[4].raw_prob
    assert sum(a.prob for a in first.top) == pytest.approx(1.0, abs=1e-5)
    assert sample.mean_logprob == pytest.approx(
        sum(e.raw_logprob for e in events) / len(events))


def test_bad_arguments_are_rejected(tiny: LoadedModel) -> None:
    with pytest.raises(ValueError, match="n must be"):
        generate(tiny, "x", GREEDY, n=0)
    with pytest.raises(ValueError, match="empty prompt"):
        generate_rows(tiny, [RowSpec(prompt_ids=[], params=GREEDY)])
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_rows(tiny, [RowSpec(prompt_ids=[1], params=GREEDY, max_new_tokens=-1)])
    assert generate_rows(tiny, [RowSpec(prompt_ids=[1], params=GREEDY,
                                        max_new_tokens=0)])[0].finish_reason == "length"


def test_step_numbers_on_the_cpu_path_match_the_tensor_path(tiny: LoadedModel) -> None:
    """The CPU path computes each row's numbers in numpy; the tensor path (a GPU's) with
    log-softmax over the batch: the same tokens, ranks and alternatives, the same numbers
    to float32 rounding, with masked tokens (top-k 3) and named tokens."""
    from tempscope.engine import loop
    from tempscope.sampling import BatchSampler

    params = [SamplingParams(temperature=0.7, top_k=3, logprob_token_ids=[5, 70]),
              SamplingParams(temperature=1.3), SamplingParams(temperature=0.0)]
    rows = [loop._Row(i, RowSpec(prompt_ids=[65, 66], params=p, max_new_tokens=4),
                      tiny, set(), 100) for i, p in enumerate(params)]
    sampler = BatchSampler(params, vocab_size=tiny.vocab_size, seeds=[1, 2, 3])
    logits = torch.randn(3, tiny.vocab_size, generator=torch.Generator().manual_seed(0)) * 4
    shown = sampler.process(logits)
    tokens = sampler.choose(shown)
    cpu = loop._stats_cpu(logits, shown, tokens.tolist(), 5, rows)
    tensor = loop._stats_torch(logits, shown, tokens, 5, rows)
    for (n1, top1, named1), (n2, top2, named2) in zip(cpu, tensor, strict=True):
        assert n1[4] == n2[4]  # rank
        assert n1[:4] == pytest.approx(n2[:4], rel=1e-4, abs=1e-4)
        assert [t for t, _, _ in top1] == [t for t, _, _ in top2]
        assert [x for _, *xs in top1 for x in xs] == pytest.approx(
            [x for _, *xs in top2 for x in xs], abs=1e-6)
        assert [t for t, _, _ in named1] == [t for t, _, _ in named2]
        assert [x for _, *xs in named1 for x in xs] == pytest.approx(
            [x for _, *xs in named2 for x in xs], abs=1e-6)
    assert [p for _, _, p in cpu[0][1]][3:] == [0.0, 0.0]  # top-k 3: 2 removed ones follow
    assert len(cpu[0][2]) == 2


def test_rows_that_ask_for_no_numbers_get_the_same_tokens(tiny: LoadedModel) -> None:
    """``numbers=False`` (a client that asked for no log-probs) skips the step numbers, alone
    and beside rows that want them, and changes no token."""
    import math

    params = [SamplingParams(temperature=1.1, top_p=0.9), SamplingParams(temperature=0.8)]

    def rows(numbers: list[bool]) -> list[RowSpec]:
        return [RowSpec(prompt_ids=[65, 66, 67], params=p, seed=7 + i, max_new_tokens=6,
                        numbers=n) for i, (p, n) in enumerate(zip(params, numbers, strict=True))]

    full = generate_rows(tiny, rows([True, True]))
    mixed = generate_rows(tiny, rows([False, True]))
    (lean,) = generate_rows(tiny, rows([False, True])[:1])
    assert [r.token_ids for r in mixed] == [r.token_ids for r in full]
    assert lean.token_ids == full[0].token_ids and lean.text == full[0].text
    for event in lean.steps + mixed[0].steps:
        assert math.isnan(event.raw_logprob) and math.isnan(event.entropy)
        assert event.top == [] and event.raw_rank == 0
    assert [(e.raw_logprob, e.raw_rank, [a.token_id for a in e.top]) for e in mixed[1].steps] \
        == [(e.raw_logprob, e.raw_rank, [a.token_id for a in e.top]) for e in full[1].steps]
