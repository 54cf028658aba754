"""Greedy and beam-search decoding for `Seq2SeqTransformer`.

Both are batched and incremental: the source is encoded once, and each step feeds only the
newest token through the decoder, whose `DecoderCache` holds the keys and values of the earlier
ones (and of the memory), so a step's cost does not grow with the prefix's projections. They
stop as soon as every sentence has finished. Outputs are token ids without bos and eos. Put
the model in eval mode first (dropout).

Length limit per sentence: `max_len + src_len_ratio * source length` tokens (fairseq's
max_len_b and max_len_a), and never more than the decoder's `max_seq_len` positions allow;
a sentence that reaches it without eos ends there.

Shape letters in comments: B batch (sentences), K beams, S source length, V vocabulary size.
"""

from __future__ import annotations

import torch

from nlptool.models.seq2seq import Seq2SeqTransformer


def _length_limits(
    model: Seq2SeqTransformer,
    src_ids: torch.Tensor,
    src_mask: torch.Tensor | None,
    max_len: int,
    src_len_ratio: float,
) -> torch.Tensor:
    """(B,) the most tokens each sentence may produce."""
    if src_mask is None:
        src_lengths = torch.full((src_ids.shape[0],), src_ids.shape[1], device=src_ids.device)
    else:
        src_lengths = src_mask.long().sum(dim=1)
    limits = (max_len + src_len_ratio * src_lengths).long()
    # Position 0 holds bos; the last token produced is never fed back, so a sentence of n tokens
    # needs n decoder positions.
    return limits.clamp(0, model.cfg.max_seq_len)


@torch.inference_mode()
def greedy_decode(
    model: Seq2SeqTransformer,
    src_ids: torch.Tensor,
    src_mask: torch.Tensor | None,
    bos_id: int,
    eos_id: int,
    max_len: int,
    src_len_ratio: float = 0.0,
) -> list[list[int]]:
    """The most likely next token at each step, for src_ids (B, S) -> B lists of token ids."""
    B = src_ids.shape[0]
    limits = _length_limits(model, src_ids, src_mask, max_len, src_len_ratio)  # (B,)
    memory = model.encode(src_ids, src_mask)  # (B, S, C)
    cache = model.new_cache()
    last = torch.full((B, 1), bos_id, dtype=torch.long, device=src_ids.device)
    steps: list[torch.Tensor] = []  # one (B,) tensor of chosen tokens per step
    lengths = limits.clone()  # output length; shortened when eos comes first
    finished = limits == 0
    for step in range(int(limits.max())):
        if finished.all():
            break
        hidden = model.decode(last, memory, src_mask, cache)  # (B, 1, C)
        token = model.lm_logits(hidden[:, -1]).argmax(dim=-1)  # (B,)
        ends_here = ~finished & (token == eos_id)
        lengths[ends_here] = step
        finished |= ends_here | (step + 1 >= limits)
        steps.append(token)
        last = token[:, None]
    if not steps:
        return [[] for _ in range(B)]
    tokens = torch.stack(steps, dim=1).tolist()  # (B, steps)
    return [row[:n] for row, n in zip(tokens, lengths.tolist())]


@torch.inference_mode()
def beam_search(
    model: Seq2SeqTransformer,
    src_ids: torch.Tensor,
    src_mask: torch.Tensor | None,
    bos_id: int,
    eos_id: int,
    max_len: int,
    beam_size: int = 4,
    length_penalty: float = 1.0,
    src_len_ratio: float = 0.0,
) -> list[list[int]]:
    """The best hypothesis of a beam search, for src_ids (B, S) -> B lists of token ids.

    Hypotheses are ranked by simple length normalisation: log P(y | x) / len**length_penalty,
    where len counts the produced tokens including eos (so an empty output has len 1), and the
    log-probability includes eos's. length_penalty = 0 ranks by log-probability alone (favours
    short outputs); 1 by the mean log-probability per token.

    A step keeps, per sentence, the K best continuations that are not eos; an eos among the K
    best candidates finishes that hypothesis. A sentence is done when it has K finished
    hypotheses (as in fairseq), when no live beam can beat its best finished one any more
    (live scores only fall, and len**alpha is at most limit**alpha), or at its length limit,
    where all its live beams finish.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size={beam_size}: must be >= 1")
    if length_penalty < 0:
        raise ValueError(f"length_penalty={length_penalty}: must be >= 0")
    B, K, device = src_ids.shape[0], beam_size, src_ids.device
    limits = _length_limits(model, src_ids, src_mask, max_len, src_len_ratio)  # (B,)
    # Every beam of a sentence reads the same memory: repeat it, beams of one sentence adjacent.
    memory = model.encode(src_ids, src_mask).repeat_interleave(K, dim=0)  # (B*K, S, C)
    if src_mask is not None:
        src_mask = src_mask.repeat_interleave(K, dim=0)  # (B*K, S)
    cache = model.new_cache()

    # All beams start as bos alone: let only beam 0 expand at the first step, or the K beams
    # would be K copies of the best hypothesis.
    scores = torch.zeros(B, K, device=device)  # log P of each live beam
    scores[:, 1:] = float("-inf")
    history = torch.empty(B * K, 0, dtype=torch.long, device=device)  # tokens after bos
    last = torch.full((B * K, 1), bos_id, dtype=torch.long, device=device)
    best_score = torch.full((B,), float("-inf"), device=device)  # of the finished hypotheses
    best: list[list[int]] = [[] for _ in range(B)]
    num_finished = torch.zeros(B, dtype=torch.long, device=device)
    done = limits == 0
    rank = torch.arange(2 * K, device=device)  # (2K,)
    first_beam = torch.arange(B, device=device)[:, None] * K  # (B, 1): row of beam 0

    for step in range(int(limits.max())):
        if done.all():
            break
        hidden = model.decode(last, memory, src_mask, cache)  # (B*K, 1, C)
        log_probs = model.lm_logits(hidden[:, -1]).float().log_softmax(dim=-1)  # (B*K, V)
        V = log_probs.shape[-1]
        candidates = scores[:, :, None] + log_probs.view(B, K, V)  # (B, K, V)
        # 2K candidates always leave at least K that are not eos.
        top_scores, top_index = candidates.view(B, K * V).topk(min(2 * K, K * V), dim=1)
        top_beam, top_token = top_index // V, top_index % V  # (B, 2K) each
        is_eos = top_token == eos_id
        at_limit = step + 1 >= limits  # (B,)

        # Finish eos candidates among the K best, and every one of the K best at the limit.
        finishing = (is_eos | at_limit[:, None]) & (rank[: top_index.shape[1]] < K)
        finishing &= ~done[:, None] & (top_scores > float("-inf"))
        normalised = top_scores / float(step + 1) ** length_penalty
        normalised = normalised.masked_fill(~finishing, float("-inf"))
        step_best, step_arg = normalised.max(dim=1)  # (B,)
        for b in (step_best > best_score).nonzero().flatten().tolist():
            row = int(first_beam[b, 0] + top_beam[b, step_arg[b]])
            tokens = history[row].tolist()
            token = int(top_token[b, step_arg[b]])
            best[b] = tokens if token == eos_id else [*tokens, token]
            best_score[b] = step_best[b]
        num_finished += finishing.sum(dim=1)

        # Live beams: the K best candidates that are not eos (a stable sort keeps their order).
        keep = is_eos.long().argsort(dim=1, stable=True)[:, :K]  # (B, K) indices into the 2K
        scores = top_scores.gather(1, keep)  # (B, K), best first
        rows = (first_beam + top_beam.gather(1, keep)).flatten()  # (B*K,) beam each comes from
        last = top_token.gather(1, keep).reshape(B * K, 1)
        history = torch.cat([history[rows], last], dim=1)
        cache.reorder(rows)

        # A live beam can reach at best its current score over limit**alpha.
        bound = scores[:, 0] / limits.clamp(min=1).float() ** length_penalty
        done |= at_limit | (num_finished >= K) | (best_score >= bound)
    return best
