"""Encoder-decoder Transformer and its decoding: shapes, masks, the KV cache, greedy and beam
search, the size of transformer-base, and a toy task learned end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from nlptool.cli import config_dir
from nlptool.models import ModelConfig, Seq2SeqTransformer, build_model, count_parameters
from nlptool.models.decoding import beam_search, greedy_decode

CONFIGS = Path(config_dir()) / "model"
VOCAB, PAD, BOS, EOS = 30, 0, 1, 2


def tiny(**overrides) -> ModelConfig:
    fields = dict(arch="seq2seq", num_layers=2, hidden_size=32, num_heads=4, max_seq_len=24)
    fields.update(vocab_size=VOCAB, activation="relu", layer_norm_eps=1e-5)
    fields.update(dropout=0.0, attention_dropout=0.0)
    return ModelConfig(**(fields | overrides))


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: one thread is as fast, and far faster on a busy machine, where
    threads that wait for each other at every op would multiply the runtime."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def model() -> Seq2SeqTransformer:
    torch.manual_seed(0)
    return Seq2SeqTransformer(tiny()).eval()


@pytest.fixture
def peaked() -> Seq2SeqTransformer:
    """Random weights large enough for confident, varied predictions, eos among them (the
    default init makes a random model repeat one token), so decoding has choices to make."""
    torch.manual_seed(1)
    return Seq2SeqTransformer(tiny(initializer_range=0.5, tie_word_embeddings=False)).eval()


def sources(batch: int = 4, length: int = 7, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Random source ids (no special tokens) with right padding of various lengths."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=generator)
    lengths = torch.tensor([length, length - 3, 2, length - 1][:batch])
    mask = torch.arange(length)[None, :] < lengths[:, None]  # (B, S)
    return ids.masked_fill(~mask, PAD), mask.long()


def test_shapes_and_build(model: Seq2SeqTransformer) -> None:
    src, src_mask = sources()
    tgt = torch.randint(3, VOCAB, (4, 5))
    assert model.encode(src, src_mask).shape == (4, 7, 32)
    hidden = model(src, src_mask, tgt)
    assert hidden.shape == (4, 5, 32)
    assert model.lm_logits(hidden).shape == (4, 5, VOCAB)
    assert isinstance(build_model(tiny()), Seq2SeqTransformer)


def test_one_embedding_for_source_target_and_output(model: Seq2SeqTransformer) -> None:
    assert model.lm_head.weight is model.token_embeddings.weight
    assert model.token_embeddings.weight[PAD].abs().sum() == 0
    untied = Seq2SeqTransformer(tiny(tie_word_embeddings=False))
    assert untied.lm_head.weight is not untied.token_embeddings.weight


def test_too_long_input_raises(model: Seq2SeqTransformer) -> None:
    with pytest.raises(ValueError, match="model.max_seq_len=24"):
        model.encode(torch.ones(1, 25, dtype=torch.long))
    memory = model.encode(torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="model.max_seq_len=24"):
        model.decode(torch.ones(1, 25, dtype=torch.long), memory)


def test_source_padding_changes_nothing(model: Seq2SeqTransformer) -> None:
    src = torch.randint(3, VOCAB, (2, 5))
    tgt = torch.randint(3, VOCAB, (2, 4))
    padded = torch.cat([src, torch.full((2, 3), PAD)], dim=1)
    mask = torch.tensor([[1] * 5 + [0] * 3] * 2)
    torch.testing.assert_close(
        model.encode(padded, mask)[:, :5], model.encode(src, None), atol=1e-5, rtol=0
    )
    # the decoder must not attend to the padded memory either
    torch.testing.assert_close(model(padded, mask, tgt), model(src, None, tgt), atol=1e-5, rtol=0)
    all_padding = model(padded, torch.zeros_like(mask), tgt)
    assert torch.isfinite(all_padding).all()


def test_decoder_is_causal(model: Seq2SeqTransformer) -> None:
    src, src_mask = sources()
    tgt = torch.randint(3, VOCAB, (4, 8))
    changed = tgt.clone()
    changed[:, 5] = (changed[:, 5] + 1) % VOCAB
    before, after = model(src, src_mask, tgt), model(src, src_mask, changed)
    torch.testing.assert_close(after[:, :5], before[:, :5], atol=1e-6, rtol=0)
    assert not torch.allclose(after[:, 5:], before[:, 5:])


def test_target_padding_mask_changes_no_real_position(model: Seq2SeqTransformer) -> None:
    src, src_mask = sources()
    tgt = torch.randint(3, VOCAB, (4, 6))
    tgt_mask = torch.ones(4, 6, dtype=torch.long)
    tgt_mask[1, 4:] = 0
    masked = model(src, src_mask, tgt, tgt_mask)
    torch.testing.assert_close(masked[1, :4], model(src, src_mask, tgt)[1, :4], atol=1e-6, rtol=0)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("chunks", [[1] * 9, [3, 1, 4, 1]])
def test_cached_decoding_equals_full_decoding(
    model: Seq2SeqTransformer, padded: bool, chunks: list[int]
) -> None:
    src, src_mask = sources()
    if not padded:
        src_mask = None
    tgt = torch.randint(3, VOCAB, (4, sum(chunks)))
    memory = model.encode(src, src_mask)
    full = model.decode(tgt, memory, src_mask)  # (B, T, C)

    cache = model.new_cache()
    steps, start = [], 0
    for size in chunks:  # one token at a time, or several new tokens at once
        steps.append(model.decode(tgt[:, start : start + size], memory, src_mask, cache))
        start += size
        assert cache.length == start
    incremental = torch.cat(steps, dim=1)
    torch.testing.assert_close(incremental, full, atol=1e-5, rtol=0)
    logits_full, logits_step = model.lm_logits(full), model.lm_logits(incremental)
    torch.testing.assert_close(logits_step, logits_full, atol=1e-5, rtol=0)


def naive_greedy(
    model: Seq2SeqTransformer, src: torch.Tensor, src_mask: torch.Tensor | None, max_len: int
) -> list[list[int]]:
    """Greedy decoding the slow way: the whole prefix through the decoder at every step."""
    with torch.inference_mode():
        memory = model.encode(src, src_mask)
        tokens = torch.full((src.shape[0], 1), BOS)
        for _ in range(max_len):
            hidden = model.decode(tokens, memory, src_mask)
            next_token = model.lm_logits(hidden[:, -1]).argmax(dim=-1, keepdim=True)
            tokens = torch.cat([tokens, next_token], dim=1)
    rows = [row[1:] for row in tokens.tolist()]
    return [row[: row.index(EOS)] if EOS in row else row for row in rows]


def sequence_log_prob(
    model: Seq2SeqTransformer, src: torch.Tensor, src_mask: torch.Tensor, out: list, max_len: int
) -> float:
    """log P(out, eos | src) for a finished output, log P(out | src) for one cut at max_len."""
    target = out + [EOS] if len(out) < max_len else out
    with torch.inference_mode():
        inputs = torch.tensor([[BOS, *target[:-1]]]) if target else torch.tensor([[BOS]])
        hidden = model(src[None], src_mask[None], inputs)
        log_probs = model.lm_logits(hidden[0]).log_softmax(dim=-1)  # (T, V)
    return sum(log_probs[t, token].item() for t, token in enumerate(target))


def test_greedy_equals_naive_loop(peaked: Seq2SeqTransformer) -> None:
    src, src_mask = sources()
    greedy = greedy_decode(peaked, src, src_mask, BOS, EOS, max_len=10)
    assert greedy == naive_greedy(peaked, src, src_mask, max_len=10)
    # some sentences end with eos, others at the length limit
    assert any(len(out) < 10 for out in greedy) and any(len(out) == 10 for out in greedy)
    assert all(BOS not in out and EOS not in out for out in greedy)


def test_length_limits_and_eos() -> None:
    torch.manual_seed(0)
    model = Seq2SeqTransformer(tiny())  # the default init repeats one token: never eos
    model.eval()
    src, src_mask = sources()
    lengths = src_mask.sum(dim=1).tolist()
    for decode in (greedy_decode, beam_search):
        outputs = decode(model, src, src_mask, BOS, EOS, max_len=3, src_len_ratio=1.0)
        assert [len(out) for out in outputs] == [3 + n for n in lengths]
        assert decode(model, src, src_mask, BOS, EOS, max_len=0) == [[]] * 4
        # at most max_seq_len tokens, as the decoder has no more positions
        assert {len(out) for out in decode(model, src, src_mask, BOS, EOS, 99)} == {24}
    first = greedy_decode(model, src, src_mask, BOS, EOS, max_len=3)[0][0]
    # the token greedy picks first, made eos, ends that sentence at once
    assert greedy_decode(model, src, src_mask, BOS, first, max_len=3)[0] == []


def test_beam_of_one_is_greedy(peaked: Seq2SeqTransformer) -> None:
    src, src_mask = sources()
    greedy = greedy_decode(peaked, src, src_mask, BOS, EOS, max_len=10)
    assert beam_search(peaked, src, src_mask, BOS, EOS, 10, beam_size=1) == greedy


def test_beam_search_is_at_least_as_likely_as_greedy(peaked: Seq2SeqTransformer) -> None:
    src, src_mask = sources()
    greedy = greedy_decode(peaked, src, src_mask, BOS, EOS, max_len=10)
    beam = beam_search(peaked, src, src_mask, BOS, EOS, 10, beam_size=4, length_penalty=0.0)
    assert beam != greedy  # the search found something greedy missed
    for i in range(4):
        beam_score = sequence_log_prob(peaked, src[i], src_mask[i], beam[i], 10)
        greedy_score = sequence_log_prob(peaked, src[i], src_mask[i], greedy[i], 10)
        assert beam_score >= greedy_score - 1e-4


def test_transformer_base_parameter_count() -> None:
    fields = OmegaConf.to_container(OmegaConf.load(CONFIGS / "transformer-base.yaml"))
    cfg = ModelConfig(**fields, vocab_size=37_000)
    with torch.device("meta"):  # shapes only, nothing allocated
        model = build_model(cfg)

    V, C, F, P, L = 37_000, 512, 2048, 512, 6
    attention = 4 * C * C + 4 * C  # q, k, v and output projections with biases
    mlp = 2 * C * F + F + C
    encoder_block = attention + mlp + 2 * 2 * C  # two LayerNorms
    decoder_block = 2 * attention + mlp + 3 * 2 * C  # self- and cross-attention, three norms
    embeddings = V * C + 2 * P * C  # shared tokens (tied with the output), two position tables
    expected = embeddings + L * (encoder_block + decoder_block) + 2 * 2 * C  # + final norms
    assert count_parameters(model) == expected == 63_608_832
    # Vaswani et al. report 65M with sinusoidal positions and a 37k joint BPE vocabulary.
    assert 60e6 < count_parameters(model) < 66e6


def test_learns_to_reverse() -> None:
    """A small model trained for 150 steps reverses random sequences (every one of 200)."""
    torch.manual_seed(0)
    length, vocab = 8, 20
    model = Seq2SeqTransformer(tiny(num_layers=1, hidden_size=64, vocab_size=vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        src = torch.randint(3, vocab, (size, length))
        return src, src.flip(1)

    steps = 150
    for step in range(steps):
        for group in optimizer.param_groups:  # linear warm-up, then linear decay
            group["lr"] = 3e-3 * min(1.0, (step + 1) / 20) * (1 - step / steps)
        src, tgt = batch(32)
        decoder_input = torch.cat([torch.full((32, 1), BOS), tgt], dim=1)
        labels = torch.cat([tgt, torch.full((32, 1), EOS)], dim=1)
        logits = model.lm_logits(model(src, None, decoder_input))
        loss = F.cross_entropy(logits.reshape(-1, vocab), labels.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.eval()
    src, tgt = batch(200)
    outputs = greedy_decode(model, src, None, BOS, EOS, max_len=length + 4)
    accuracy = sum(out == want for out, want in zip(outputs, tgt.tolist())) / 200
    assert accuracy >= 0.95
