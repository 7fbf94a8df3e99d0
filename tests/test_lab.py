"""tempscope.lab on the tiny model: ranks, step distributions, side-by-side rows, the tree."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tempscope import lab
from tempscope.distribution import softmax
from tempscope.engine.loader import load_model
from tempscope.engine.loop import Alternative, StepEvent, generate_rows
from tempscope.sampling import SamplingParams, probabilities


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Any:
    return load_model(str(tiny_model_dir))


def _event(chosen: int, raw: dict[int, float]) -> StepEvent:
    """A step event whose alternatives are ``raw`` (token -> raw probability), in that order."""
    top = [Alternative(t, chr(65 + t), p, p) for t, p in raw.items()]
    p = raw.get(chosen, 0.001)
    return StepEvent(row=0, step=1, token_id=chosen, text="x", raw_logprob=math.log(p),
                     logprob=math.log(p), entropy=1.0, raw_entropy=1.0, top=top)


@pytest.mark.parametrize(("rank", "bucket"), [
    (1, "top10"), (10, "top10"), (11, "top100"), (100, "top100"), (101, "top1000"),
    (1000, "top1000"), (1001, "rest"), (None, "rest"),
])
def test_gltr_buckets(rank: int | None, bucket: str) -> None:
    assert lab.gltr_bucket(rank) == bucket


def test_raw_rank_comes_from_the_engine(model: Any) -> None:
    """The generation loop counts the chosen token's raw rank over the whole vocabulary."""
    from tempscope.engine.loop import RowSpec, generate_rows

    ids = model.encode("The cat")
    (r,) = generate_rows(model, [RowSpec(prompt_ids=ids, params=SamplingParams(
        temperature=5.0), seed=3, max_new_tokens=6)], top_alternatives=1)
    logits = model.last_logits(ids).float()
    first = r.steps[0]
    assert lab.raw_rank(first) == int((logits > logits[first.token_id]).sum()) + 1
    info = lab.token_info(model, first)
    assert info.bucket == lab.gltr_bucket(info.rank)
    unknown = _event(9, {0: 0.5, 1: 0.3, 2: 0.1})  # no raw_rank: a remote server's event
    assert lab.token_info(model, unknown).rank is None
    assert lab.token_info(model, unknown).bucket is None


def test_step_distribution_matches_the_softmax_and_the_chain(model: Any) -> None:
    ids = model.encode("The cat")
    logits = model.last_logits(ids).float()  # (V,)
    params = [SamplingParams(temperature=0.5, top_k=3), SamplingParams(temperature=2.0)]
    d = lab.step_distribution(model, ids, params, top=5)
    assert d.tokens == torch.topk(logits, 5).indices.tolist()
    assert d.samplers_on
    hot, cold = d.temperatures[1], d.temperatures[0]
    want = softmax(logits, 2.0)[d.tokens].tolist()
    assert hot.raw_probs == pytest.approx(want, rel=1e-5)
    assert hot.probs == pytest.approx(want, rel=1e-4)  # no sampler besides T: the same
    # top-k 3 at T = 0.5: the three likeliest renormalised, everything else 0.
    top3 = softmax(logits[d.tokens[:3]], 0.5).tolist()
    assert cold.probs == pytest.approx([*top3, 0.0, 0.0], abs=1e-6)
    assert cold.processed.kept == 3 and cold.raw.kept == model.vocab_size
    assert cold.processed.entropy < cold.raw.entropy
    assert [t for t, _, _ in cold.top][:3] == d.tokens[:3]
    assert set(d.texts) >= set(d.tokens)


def test_step_distribution_uses_given_logits_without_a_model_call(model: Any) -> None:
    class NoModel:
        vocab_size = 4
        eos_token_ids = ()

        def token_text(self, i: int) -> str:
            return str(i)

        def last_logits(self, ids: Any) -> torch.Tensor:
            raise AssertionError("the model was called")

    x = torch.tensor([2.0, 4.0, 3.0, -1.0])
    d = lab.step_distribution(NoModel(), [0], [SamplingParams(temperature=1.0)],  # type: ignore[arg-type]
                              top=2, logits=x)
    assert d.tokens == [1, 2]
    assert d.temperatures[0].raw_probs == pytest.approx(softmax(x, 1.0)[[1, 2]].tolist())
    assert not d.samplers_on
    with pytest.raises(ValueError, match="top must be >= 1"):
        lab.step_distribution(NoModel(), [0], [SamplingParams()], top=0, logits=x)  # type: ignore[arg-type]


def test_side_by_side_rows_share_seed_and_match_a_row_alone(model: Any) -> None:
    ids = model.encode("Hello")
    temps = [0.0, 0.7, 1.5]
    rows = lab.side_by_side_rows(ids, [SamplingParams(temperature=t) for t in temps], seed=11,
                                 max_new_tokens=6)
    assert [r.seed for r in rows] == [11, 11, 11]
    together = generate_rows(model, rows, top_alternatives=1000)
    alone = generate_rows(model, [rows[1]], top_alternatives=3)
    assert together[1].token_ids == alone[0].token_ids  # seeded: the batch changes nothing
    greedy = []
    for _ in range(6):  # T = 0 column: the argmax at every step
        greedy.append(int(model.last_logits(ids + greedy).argmax()))
    assert together[0].token_ids == greedy
    for r in together:
        info = [lab.token_info(model, e, alternatives=4) for e in r.steps]
        assert all(len(i.top) == 4 and 0 <= i.raw_prob <= 1 for i in info)
        assert all(i.bucket == lab.gltr_bucket(i.rank) for i in info)  # every rank counted
        summary = lab.column_summary(r)
        assert summary.finish_reason == "length" and len(summary.token_ids) == 6
        assert summary.mean_logprob == pytest.approx(
            sum(math.log(i.raw_prob) for i in info) / 6, rel=1e-4)
    # Greedy picks the argmax: rank 1 every step, counted from the alternatives.
    assert [lab.token_info(model, e).rank for e in together[0].steps] == [1] * 6


def test_piece_ids_append_without_bos(model: Any) -> None:
    assert lab.piece_ids(model, "ab") == model.encode("ab")
    assert model.decode(lab.piece_ids(model, " dog")) == " dog"


def test_tree_probabilities_match_the_step_distribution(model: Any) -> None:
    ids = model.encode("The cat")
    params = SamplingParams(temperature=0.5, min_p=0.05)
    tree = lab.expand_tree(model, ids, params, depth=3, top=2, min_prob=0.01)
    assert tree.nodes and not tree.truncated
    by_id = {n.id: n for n in tree.nodes}
    for n in tree.nodes:
        parent = by_id[n.parent] if n.parent is not None else None
        prefix = list(parent.path) if parent else []
        assert n.path == (*prefix, n.token_id) and n.depth == len(n.path)
        step = lab.step_distribution(model, ids + prefix, [params], top=model.vocab_size)
        want = dict(zip(step.tokens, step.temperatures[0].probs, strict=True))
        assert n.prob == pytest.approx(want[n.token_id], abs=1e-5)
        assert n.prob >= 0.01
        assert n.path_prob == pytest.approx((parent.path_prob if parent else 1.0) * n.prob)
        assert n.path_text == model.decode(list(n.path))
    # Children: at most `top` per parent, the likeliest first.
    for key in {n.parent for n in tree.nodes}:
        kids = [n.prob for n in tree.nodes if n.parent == key]
        assert len(kids) <= 2 and kids == sorted(kids, reverse=True)


def test_tree_without_cut_off_is_full_and_max_nodes_truncates(model: Any) -> None:
    ids = model.encode("Hi")
    full = lab.expand_tree(model, ids, SamplingParams(temperature=1.0), depth=2, top=2,
                           min_prob=0.0)
    assert [n.depth for n in full.nodes] == [1, 1, 2, 2, 2, 2]
    cut = lab.expand_tree(model, ids, SamplingParams(temperature=1.0), depth=3, top=2,
                          min_prob=0.0, max_nodes=5)
    assert len(cut.nodes) == 5 and cut.truncated
    greedy = lab.expand_tree(model, ids, SamplingParams(temperature=0.0), depth=3, top=3,
                             min_prob=0.0)
    assert [n.prob for n in greedy.nodes] == [1.0, 1.0, 1.0]  # T = 0: one path


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"depth": 0}, "depth, top and max_nodes must be >= 1"),
    ({"min_prob": 1.5}, r"min_prob must be in \[0, 1\]"),
])
def test_tree_rejects_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lab.TreeExpansion([1], SamplingParams(), **kwargs)


def test_probabilities_helper_agrees_with_step_rows(model: Any) -> None:
    # The processed row of a step is the library's chain on the same logits, penalties
    # seeing the text so far.
    ids = model.encode("aaaa")
    p = SamplingParams(temperature=1.0, repetition_penalty=1.5)
    d = lab.step_distribution(model, ids, [p], top=model.vocab_size)
    want = probabilities(model.last_logits(ids), p, history=ids)[d.tokens].tolist()
    assert d.temperatures[0].probs == pytest.approx(want, abs=1e-6)
    assert d.temperatures[0].probs != pytest.approx(d.temperatures[0].raw_probs, abs=1e-6)


def test_step_distribution_gives_text_samplers_the_tokenizer(model: Any) -> None:
    ids = model.encode("The cat")
    banned = model.encode("e")[0]
    d = lab.step_distribution(model, ids, [SamplingParams(temperature=1.0, bad_words=["e"])],
                              top=model.vocab_size)
    probs = dict(zip(d.tokens, d.temperatures[0].probs, strict=True))
    assert probs[banned] == 0 and d.temperatures[0].raw_probs[d.tokens.index(banned)] > 0
