"""Generation with a causal LM: the cached steps give what the full forward gives, greedy decoding
gives what Hugging Face's generate gives, and the score filters are HF's logits warpers."""

from __future__ import annotations

import pytest
import torch

from nlptool.interop.hf import config_from_hf_gpt2, gpt2_from_hf
from nlptool.models import GPTForCausalLM
from nlptool.models.sampling import Sampling, filter_scores, generate, next_token

transformers = pytest.importorskip("transformers")
VOCAB = 61


@pytest.fixture(scope="module")
def models() -> tuple[GPTForCausalLM, object]:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=40,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    theirs = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in theirs.parameters():  # larger than the init: decisive, varied argmaxes
            p.normal_(0, 0.3)
    ours = GPTForCausalLM(config_from_hf_gpt2(config)).eval()
    ours.load_state_dict(gpt2_from_hf(theirs.state_dict()), strict=True)
    return ours, theirs


def test_cached_steps_give_the_full_forward(models):
    ours, _ = models
    ids = torch.randint(0, VOCAB, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = ours(ids)  # (2, 13, C)
        cache = ours.new_cache()
        parts = [ours.forward_cached(ids[:, :5], cache)]  # the prompt at once
        parts += [ours.forward_cached(ids[:, t : t + 1], cache) for t in range(5, 9)]  # one each
        parts += [ours.forward_cached(ids[:, 9:], cache)]  # several after a cache
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache[0].length == 13


def test_greedy_generation_is_hugging_faces(models):
    ours, theirs = models
    prompt = [5, 17, 3, 44, 9]
    tokens = list(generate(ours, prompt, 20, Sampling(temperature=0)))
    expected = theirs.generate(
        torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=None,
        pad_token_id=0,
    )[0, len(prompt) :].tolist()  # fmt: skip
    assert tokens == expected


def test_each_step_feeds_one_token(models, monkeypatch):
    ours, _ = models
    fed = []
    original = ours.forward_cached

    def recording(ids, cache):
        fed.append(ids.shape[1])
        return original(ids, cache)

    monkeypatch.setattr(ours, "forward_cached", recording)
    tokens = list(generate(ours, [1, 2, 3], 10, Sampling(temperature=0)))
    assert len(tokens) == 10 and fed == [3] + [1] * 9


def test_generation_stops_at_eos_and_at_the_last_position(models):
    ours, _ = models
    greedy = list(generate(ours, [5, 17, 3], 30, Sampling(temperature=0)))
    eos = greedy[4]
    stopped = list(generate(ours, [5, 17, 3], 30, Sampling(temperature=0), eos_id=eos))
    assert stopped == greedy[: greedy.index(eos) + 1]
    # 40 positions: after 35 prompt tokens, 5 more are fed; the 6th is predicted at the last.
    assert len(list(generate(ours, list(range(1, 36)), 30, Sampling(temperature=0)))) == 6


@pytest.mark.parametrize(("top_k", "top_p"), [(0, 0.9), (5, 1.0), (7, 0.5), (0, 0.05)])
def test_score_filters_match_hugging_faces_warpers(top_k, top_p):
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    scores = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(top_k))
    expected = scores.clone()
    if top_k:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p < 1:
        expected = TopPLogitsWarper(top_p)(None, expected)
    ours = filter_scores(scores, top_k, top_p)
    assert torch.equal(torch.isinf(ours), torch.isinf(expected))
    kept = ~torch.isinf(ours)
    assert torch.equal(ours[kept], scores[kept])
    assert kept.sum(-1).min() >= 1


def test_sampling_follows_the_filtered_distribution():
    scores = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]]).repeat(20000, 1)
    generator = torch.Generator().manual_seed(0)
    drawn = next_token(scores, Sampling(temperature=1.0, top_k=3), generator)
    counts = torch.bincount(drawn, minlength=5).float() / len(drawn)
    expected = torch.tensor([2.0, 1.0, 0.5]).softmax(-1)
    assert counts[3:].sum() == 0  # outside the top 3: never
    assert torch.allclose(counts[:3], expected, atol=0.015)  # ~3 standard errors
    hot = next_token(scores, Sampling(temperature=2.0), torch.Generator().manual_seed(0))
    flatter = torch.bincount(hot, minlength=5).float() / len(hot)
    assert torch.allclose(flatter, (scores[0] / 2).softmax(-1), atol=0.015)


def test_a_seed_fixes_the_text_and_top_k_1_is_greedy(models):
    ours, _ = models

    def sample(seed: int, **kw) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        return list(generate(ours, [4, 8], 15, Sampling(**kw), generator=generator))

    assert sample(1, temperature=1.0) == sample(1, temperature=1.0)
    assert sample(1, temperature=1.0) != sample(2, temperature=1.0)
    assert sample(3, temperature=1.0, top_k=1) == sample(0, temperature=0)


def test_bad_settings_are_refused():
    for kw in ({"temperature": -1}, {"top_k": -2}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            Sampling(**kw)
