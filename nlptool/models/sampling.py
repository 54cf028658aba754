"""Text generation with a causal LM (`GPTForCausalLM`): incremental decoding and sampling.

The prompt goes through the model once; every later step feeds the one new token, with the keys
and values of all earlier positions kept in a per-block cache, so generating n tokens costs n
single-token steps, not n forward passes over a growing sequence.

Each step's next-token scores are shaped as Hugging Face's `generate` does, in the same order:
divided by the temperature, cut to the top k, then to the nucleus (the smallest set of tokens
whose probability adds up to top_p), and sampled; temperature 0 is greedy (the argmax). A fixed
seed gives the same text every time (a generator of its own, not the global RNG).

Shape letters: V vocabulary size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from nlptool.models.gpt import GPTForCausalLM


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: no cut
    top_p: float = 1.0  # 1: no cut

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature}: must be >= 0 (0 is greedy)")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k}: must be >= 0 (0 keeps every token)")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p}: must be in (0, 1]")


def filter_scores(scores: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """scores (..., V) with every token outside the top k and outside the nucleus set to -inf.

    The nucleus keeps the most probable tokens until their probabilities add up to top_p (the
    token that crosses top_p is kept, so at least one always is).
    """
    if top_k > 0 and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]  # (..., 1)
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        probs = sorted_scores.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each
        remove_sorted = before >= top_p
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        scores = scores.masked_fill(remove, float("-inf"))
    return scores


def next_token(
    scores: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None
) -> torch.Tensor:
    """scores (B, V) of the next position -> (B,) chosen token ids."""
    if sampling.temperature == 0:
        return scores.argmax(dim=-1)
    scores = filter_scores(scores.float() / sampling.temperature, sampling.top_k, sampling.top_p)
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate(
    model: GPTForCausalLM,
    prompt: list[int],
    max_new_tokens: int,
    sampling: Sampling = Sampling(),
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    """Yield up to max_new_tokens new token ids after `prompt`, one at a time as each is chosen
    (for streaming). Stops after eos, or when the model's positions run out. The prompt must be
    non-empty and shorter than model.max_seq_len; the model should be in eval mode."""
    if not prompt:
        raise ValueError("generate needs at least one prompt token")
    device = model.token_embeddings.weight.device
    cache = model.new_cache()
    hidden = model.forward_cached(torch.tensor([prompt], device=device), cache)  # (1, T, C)
    scores = model.lm_logits(hidden[:, -1])  # (1, V)
    for produced in range(max_new_tokens):
        token = next_token(scores, sampling, generator)  # (1,)
        yield int(token)
        if token.item() == eos_id or produced + 1 == max_new_tokens:
            return
        if cache[0].length >= model.cfg.max_seq_len:  # no position left for another token
            return
        hidden = model.forward_cached(token.view(1, 1), cache)  # (1, 1, C)
        scores = model.lm_logits(hidden[:, -1])
