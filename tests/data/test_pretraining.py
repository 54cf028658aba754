"""Pretraining examples: MLM masking statistics, NSP pairs, packing, collation, step sampling."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from nlptool.data.pretraining import (
    IGNORE_INDEX,
    MaskingConfig,
    PretrainingExamples,
    StepSampler,
    collate,
    mask_tokens,
    nsp_instances,
    pack_blocks,
)

# Special ids of the synthetic vocabularies below: pad, unk, cls, sep, mask.
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
FIRST_ORDINARY = 10  # synthetic document tokens start here, clear of the specials


def masking(vocab_size: int, special_ids, mask_rate: float = 0.15, **probs) -> MaskingConfig:
    return MaskingConfig(
        mask_rate=mask_rate,
        mask_token_prob=probs.get("mask_token_prob", 0.8),
        random_token_prob=probs.get("random_token_prob", 0.1),
        mask_id=MASK,
        vocab_size=vocab_size,
        special_ids=np.asarray(special_ids, dtype=np.int64),
    )


def restore(item: dict) -> np.ndarray:
    """The ids before masking: the labels hold the original token of every selected position."""
    return np.where(item["mlm_labels"] != IGNORE_INDEX, item["mlm_labels"], item["input_ids"])


def within_sigmas(observed: float, p: float, n: int, sigmas: float = 4.0) -> bool:
    """`observed` is a fraction of n Bernoulli(p) draws: is it within `sigmas` binomial stds?"""
    return abs(observed - p) <= sigmas * np.sqrt(p * (1 - p) / n)


# --- MLM masking -------------------------------------------------------------------------------

# Specials spread over the vocabulary (not only at its start), so the mapping of random draws
# around them is exercised; MASK is among them.
STAT_VOCAB = 300
STAT_SPECIALS = np.array([PAD, UNK, CLS, SEP, MASK, 100, 299])


def sprinkled_sequences(count: int, length: int, seed: int = 0) -> list[np.ndarray]:
    """Ordinary tokens with [CLS] first, [SEP] last and about 10% specials in between."""
    rng = np.random.default_rng(seed)
    ordinary = np.setdiff1d(np.arange(STAT_VOCAB), STAT_SPECIALS)
    out = []
    for _ in range(count):
        ids = rng.choice(ordinary, size=length)
        sprinkle = rng.random(length) < 0.1
        ids[sprinkle] = rng.choice(STAT_SPECIALS, size=int(sprinkle.sum()))
        ids[0], ids[-1] = CLS, SEP
        out.append(ids)
    return out


def test_masking_statistics() -> None:
    cfg = masking(STAT_VOCAB, STAT_SPECIALS)
    totals = {"selected": 0, "mask": 0, "kept": 0, "random": 0}
    random_draws = []
    for i, ids in enumerate(sprinkled_sequences(2000, 128)):
        out, labels = mask_tokens(ids, cfg, np.random.default_rng([1, i]))
        is_special = np.isin(ids, STAT_SPECIALS)
        selected = labels != IGNORE_INDEX
        # exactly round(rate * n) of the n ordinary positions, never a special one
        assert selected.sum() == round(0.15 * (~is_special).sum())
        assert not (selected & is_special).any()
        np.testing.assert_array_equal(labels[selected], ids[selected])
        np.testing.assert_array_equal(out[~selected], ids[~selected])
        chosen_out, chosen_in = out[selected], ids[selected]
        is_mask = chosen_out == MASK
        is_kept = chosen_out == chosen_in
        totals["selected"] += int(selected.sum())
        totals["mask"] += int(is_mask.sum())
        totals["kept"] += int(is_kept.sum())
        totals["random"] += int((~is_mask & ~is_kept).sum())
        random_draws.append(chosen_out[~is_mask & ~is_kept])
    n = totals["selected"]
    ordinary = STAT_VOCAB - len(STAT_SPECIALS)
    # A random draw equal to the original token looks "kept": expected 0.1 / ordinary of them.
    assert within_sigmas(totals["mask"] / n, 0.8, n)
    assert within_sigmas(totals["random"] / n, 0.1 * (1 - 1 / ordinary), n)
    assert within_sigmas(totals["kept"] / n, 0.1 + 0.1 / ordinary, n)
    draws = np.concatenate(random_draws)
    assert not np.isin(draws, STAT_SPECIALS).any()
    assert draws.min() >= 0 and draws.max() < STAT_VOCAB


def test_random_replacements_are_uniform_over_ordinary_tokens() -> None:
    vocab, specials = 40, np.array([PAD, 3, MASK, 17, 39])
    cfg = masking(vocab, specials, mask_rate=0.5, mask_token_prob=0.0, random_token_prob=1.0)
    ordinary = np.setdiff1d(np.arange(vocab), specials)
    rng = np.random.default_rng(5)
    draws = []
    for i in range(500):
        ids = rng.choice(ordinary, size=64)
        out, labels = mask_tokens(ids, cfg, np.random.default_rng([2, i]))
        draws.append(out[labels != IGNORE_INDEX])
    counts = np.bincount(np.concatenate(draws), minlength=vocab)
    assert counts[specials].sum() == 0
    observed = counts[ordinary]
    assert observed.min() > 0  # every ordinary token can be drawn, including the last one
    expected = observed.sum() / len(ordinary)
    chi2 = ((observed - expected) ** 2 / expected).sum()
    dof = len(ordinary) - 1
    assert chi2 < dof + 6 * np.sqrt(2 * dof)


@pytest.mark.parametrize("mask_rate", [0.15, 0.3, 0.5])
def test_mask_rate_sets_the_count(mask_rate: float) -> None:
    cfg = masking(STAT_VOCAB, STAT_SPECIALS, mask_rate=mask_rate)
    for i, ids in enumerate(sprinkled_sequences(50, 100, seed=3)):
        _, labels = mask_tokens(ids, cfg, np.random.default_rng(i))
        n_ordinary = int((~np.isin(ids, STAT_SPECIALS)).sum())
        assert (labels != IGNORE_INDEX).sum() == round(mask_rate * n_ordinary)


def word_sequences(num: int, seed: int, pieces_from: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[CLS] words [SEP] with each word a start token and 0-3 continuation pieces (ids from
    pieces_from on); returns (ids, word number of each position, -1 on specials)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num):
        ids, words = [CLS], [-1]
        for w in range(int(rng.integers(20, 40))):
            ids.append(int(rng.integers(FIRST_ORDINARY, pieces_from)))
            ids.extend(int(x) for x in rng.integers(pieces_from, 100, int(rng.integers(0, 4))))
            words.extend([w] * (len(ids) - len(words)))
        ids.append(SEP)
        words.append(-1)
        out.append((np.asarray(ids), np.asarray(words)))
    return out


def test_whole_word_masking_statistics() -> None:
    continuation = np.zeros(100, dtype=bool)
    continuation[60:] = True  # ids 60..99 are "##" pieces
    cfg = masking(100, [PAD, UNK, CLS, SEP, MASK])
    cfg.continuation = continuation
    selected_total, ordinary_total, kinds = 0, 0, {"mask": 0, "kept": 0, "random": 0}
    for i, (ids, words) in enumerate(word_sequences(3000, seed=5, pieces_from=60)):
        out, labels = mask_tokens(ids, cfg, np.random.default_rng([7, i]))
        selected = labels != IGNORE_INDEX
        assert not selected[words < 0].any()  # never a special token
        for w in np.unique(words[words >= 0]):  # a word is predicted whole or not at all
            assert len(set(selected[words == w].tolist())) == 1
        n = int((words >= 0).sum())
        assert abs(int(selected.sum()) - round(0.15 * n)) <= 3  # within one word of the budget
        selected_total += int(selected.sum())
        ordinary_total += n
        chosen_out, chosen_in = out[selected], ids[selected]
        kinds["mask"] += int((chosen_out == MASK).sum())
        kinds["kept"] += int((chosen_out == chosen_in).sum())
        kinds["random"] += int(((chosen_out != MASK) & (chosen_out != chosen_in)).sum())
    assert within_sigmas(selected_total / ordinary_total, 0.15, ordinary_total, sigmas=6)
    assert within_sigmas(kinds["mask"] / selected_total, 0.8, selected_total)
    assert within_sigmas(kinds["random"] / selected_total, 0.1 * (1 - 1 / 95), selected_total)


def test_whole_words_of_a_wordpiece_tokenizer_and_cjk_characters() -> None:
    from nlptool.data.tokenizer import train_tokenizer
    from nlptool.objectives.mlm import continuation_pieces

    text = ["unbelievable things happen", "我爱自然语言处理", "believable unbelievably"] * 50
    tokenizer = train_tokenizer("wordpiece", iter(text), 75, 1, True)  # (few merges: pieces)
    continuation = continuation_pieces(tokenizer)
    ids = np.asarray(tokenizer.encode_batch(["我爱自然 unhappen"])[0])  # un ##h ##a ##pp ##en
    pieces = [tokenizer.tokenizer.id_to_token(int(i)) for i in ids]
    assert pieces[:4] == ["我", "爱", "自", "然"] and any(p.startswith("##") for p in pieces[4:])
    cfg = masking(tokenizer.vocab_size, tokenizer.special_ids)
    cfg.continuation = continuation
    seen = set()
    for seed in range(300):
        _, labels = mask_tokens(ids, cfg, np.random.default_rng(seed))
        chosen = tuple(np.flatnonzero(labels != IGNORE_INDEX).tolist())
        seen.add(chosen)
        # "unhappen" (positions 4..) goes together; each CJK character on its own
        english = set(range(4, len(ids)))
        assert english <= set(chosen) or not english & set(chosen)
    assert {(0,), (1,), (2,), (3,)} <= seen


def test_only_special_tokens_select_nothing() -> None:
    ids = np.array([CLS, SEP, PAD, PAD])
    out, labels = mask_tokens(ids, masking(50, [PAD, UNK, CLS, SEP, MASK]), np.random.default_rng())
    np.testing.assert_array_equal(out, ids)
    assert (labels == IGNORE_INDEX).all()


def mlm_examples(seed: int, num_blocks: int = 8, block_len: int = 30) -> PretrainingExamples:
    rng = np.random.default_rng(0)
    blocks = rng.integers(FIRST_ORDINARY, 100, size=(num_blocks, block_len)).tolist()
    return PretrainingExamples(
        "mlm",
        datasets.Dataset.from_dict({"input_ids": blocks}),
        seed,
        masking=masking(100, [PAD, UNK, CLS, SEP, MASK]),
        cls_id=CLS,
        sep_id=SEP,
        max_seq_len=block_len + 2,
    )


def test_masks_are_a_function_of_seed_epoch_and_index() -> None:
    examples = mlm_examples(seed=11)
    first = examples[(0, 3)]
    for again in (examples[(0, 3)], mlm_examples(seed=11)[(0, 3)]):
        for key in ("input_ids", "mlm_labels"):
            np.testing.assert_array_equal(again[key], first[key])
    # another epoch, another seed: the same block, other positions selected
    for other in (examples[(1, 3)], mlm_examples(seed=12)[(0, 3)]):
        np.testing.assert_array_equal(restore(other), restore(first))
        assert not np.array_equal(other["mlm_labels"], first["mlm_labels"])


def test_mlm_block_is_cls_block_sep() -> None:
    docs = synthetic_docs(num_docs=40, max_segments=4, seed=8)
    max_seq_len = 20
    blocks = pack_blocks(docs, max_seq_len - 2, SEP)
    examples = PretrainingExamples(
        "mlm",
        blocks,
        seed=0,
        masking=masking(tokens_in(docs) + FIRST_ORDINARY, [PAD, UNK, CLS, SEP, MASK]),
        cls_id=CLS,
        sep_id=SEP,
        max_seq_len=max_seq_len,
    )
    assert len(examples) == len(blocks) > 0
    for index in range(len(examples)):
        item = examples[(0, index)]
        assert len(item["input_ids"]) == len(item["mlm_labels"]) == max_seq_len
        expected = [CLS, *blocks[index]["input_ids"], SEP]
        np.testing.assert_array_equal(restore(item), expected)
        assert set(item) == {"input_ids", "mlm_labels"}


# --- synthetic documents ----------------------------------------------------------------------


def synthetic_docs(
    num_docs: int, max_segments: int, seed: int, min_len: int = 2, max_len: int = 12
) -> datasets.Dataset:
    """Documents of segments whose tokens are all distinct: token t is the (t - 10)-th token of
    the corpus, read document by document, so a token tells its document and position."""
    rng = np.random.default_rng(seed)
    next_token = FIRST_ORDINARY
    docs = []
    for _ in range(num_docs):
        segments = []
        for _ in range(int(rng.integers(1, max_segments + 1))):
            length = int(rng.integers(min_len, max_len + 1))
            segments.append(list(range(next_token, next_token + length)))
            next_token += length
        docs.append(segments)
    return datasets.Dataset.from_dict({"segments": docs})


def tokens_in(docs: datasets.Dataset) -> int:
    return sum(len(seg) for segments in docs["segments"] for seg in segments)


def token_places(docs: datasets.Dataset) -> dict[int, tuple[int, int]]:
    """token -> (document, position in the document's token stream)."""
    places = {}
    for doc, segments in enumerate(docs["segments"]):
        stream = [t for seg in segments for t in seg]
        places.update({t: (doc, pos) for pos, t in enumerate(stream)})
    return places


def contiguous_run(tokens: np.ndarray, places: dict) -> tuple[int, int, int]:
    """(document, first position, last position) of tokens that must be one run of a document."""
    where = [places[int(t)] for t in tokens]
    doc, first = where[0]
    assert all(d == doc for d, _ in where), "tokens from several documents"
    assert [pos for _, pos in where] == list(range(first, first + len(where))), "not contiguous"
    return doc, first, first + len(where) - 1


# --- NSP pairs ---------------------------------------------------------------------------------


def nsp_examples(docs: datasets.Dataset, max_seq_len: int, nsp_random_prob: float):
    instances = nsp_instances(docs, max_seq_len)
    examples = PretrainingExamples(
        "mlm_nsp",
        instances,
        seed=3,
        docs=docs,
        masking=masking(tokens_in(docs) + FIRST_ORDINARY, [PAD, UNK, CLS, SEP, MASK]),
        cls_id=CLS,
        sep_id=SEP,
        max_seq_len=max_seq_len,
        nsp_random_prob=nsp_random_prob,
    )
    return instances, examples


def split_pair(item: dict, max_seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Check the [CLS] A [SEP] B [SEP] layout and its token types; return (A, B) unmasked."""
    ids = restore(item)
    assert len(ids) <= max_seq_len
    assert ids[0] == CLS and ids[-1] == SEP
    seps = np.flatnonzero(ids == SEP)
    assert len(seps) == 2 and (ids == CLS).sum() == 1
    first_sep = seps[0]
    expected_types = np.r_[np.zeros(first_sep + 1), np.ones(len(ids) - first_sep - 1)]
    np.testing.assert_array_equal(item["token_type_ids"], expected_types)
    a, b = ids[1:first_sep], ids[first_sep + 1 : -1]
    assert len(a) > 0 and len(b) > 0
    return a, b


@pytest.mark.parametrize("nsp_random_prob", [0.5, 0.2, 0.0])
def test_nsp_pairs(nsp_random_prob: float) -> None:
    max_seq_len = 24
    target = max_seq_len - 3  # room left by [CLS], [SEP], [SEP]
    docs = synthetic_docs(num_docs=30, max_segments=6, seed=1)
    places = token_places(docs)
    instances, examples = nsp_examples(docs, max_seq_len, nsp_random_prob)
    labels = []
    for epoch in range(-(-3000 // len(examples))):
        for index in range(len(examples)):
            item = examples[(epoch, index)]
            a, b = split_pair(item, max_seq_len)
            doc_a, _, a_last = contiguous_run(a, places)
            doc_b, b_first, _ = contiguous_run(b, places)
            assert doc_a == instances[index]["doc"]
            label = int(item["nsp_labels"])
            if label == 0:  # B follows A in the same document
                assert doc_b == doc_a and b_first > a_last
                if len(a) + len(b) < target:  # nothing was trimmed: B starts right after A
                    assert b_first == a_last + 1
            else:
                assert label == 1 and doc_b != doc_a
            labels.append(label)
    assert within_sigmas(np.mean(labels), nsp_random_prob, len(labels))


def test_single_segment_documents_still_give_true_continuations() -> None:
    max_seq_len = 16
    # one segment per document, some longer than the pair can hold
    docs = synthetic_docs(num_docs=20, max_segments=1, seed=2, min_len=2, max_len=30)
    places = token_places(docs)
    _, examples = nsp_examples(docs, max_seq_len, nsp_random_prob=0.5)
    labels = []
    for epoch in range(20):
        for index in range(len(examples)):
            item = examples[(epoch, index)]
            a, b = split_pair(item, max_seq_len)
            label = int(item["nsp_labels"])
            doc_a, _, a_last = contiguous_run(a, places)
            doc_b, b_first, _ = contiguous_run(b, places)
            if label == 0:
                assert doc_b == doc_a and b_first == a_last + 1
            else:
                assert doc_b != doc_a
            labels.append(label)
    assert within_sigmas(np.mean(labels), 0.5, len(labels))


@pytest.mark.parametrize("swap_prob", [0.5, 0.25])
def test_sop_pairs_are_consecutive_segments_in_or_out_of_order(swap_prob: float) -> None:
    max_seq_len = 24
    target = max_seq_len - 3
    docs = synthetic_docs(num_docs=30, max_segments=6, seed=1)
    places = token_places(docs)
    instances = nsp_instances(docs, max_seq_len)
    examples = PretrainingExamples(
        "sop", instances, seed=3, docs=docs,
        masking=masking(tokens_in(docs) + FIRST_ORDINARY, [PAD, UNK, CLS, SEP, MASK]),
        cls_id=CLS, sep_id=SEP, max_seq_len=max_seq_len, sop_swap_prob=swap_prob,
    )  # fmt: skip
    labels = []
    for epoch in range(-(-3000 // len(examples))):
        for index in range(len(examples)):
            item = examples[(epoch, index)]
            first, second = split_pair(item, max_seq_len)
            label = int(item["sop_labels"])
            earlier, later = (second, first) if label == 1 else (first, second)
            doc_a, _, a_last = contiguous_run(earlier, places)
            doc_b, b_first, _ = contiguous_run(later, places)
            # Both from the instance's own document (never another one), in document order
            # once the swap is undone; adjacent when nothing was trimmed.
            assert doc_a == doc_b == instances[index]["doc"]
            assert b_first > a_last
            if len(first) + len(second) < target:
                assert b_first == a_last + 1
            labels.append(label)
    assert within_sigmas(np.mean(labels), swap_prob, len(labels))
    again = examples[(1, 3)]
    assert np.array_equal(again["input_ids"], examples[(1, 3)]["input_ids"])  # keyed, not a stream


def test_nsp_needs_two_documents() -> None:
    from nlptool.errors import UserError

    with pytest.raises(UserError, match="two documents"):
        nsp_instances(synthetic_docs(num_docs=1, max_segments=3, seed=0), 16)


# --- CLM packing --------------------------------------------------------------------------------


@pytest.mark.parametrize("block_len", [7, 16])
def test_clm_blocks_are_the_documents_joined_with_eos(block_len: int) -> None:
    eos = PAD  # any special id; the synthetic documents never contain it
    docs = synthetic_docs(num_docs=50, max_segments=4, seed=4)
    stream = []
    for segments in docs["segments"]:
        stream += [t for seg in segments for t in seg] + [eos]
    blocks = pack_blocks(docs, block_len, eos)
    assert len(blocks) == len(stream) // block_len
    assert all(len(block) == block_len for block in blocks["input_ids"])
    joined = [t for block in blocks["input_ids"] for t in block]
    assert joined == stream[: len(blocks) * block_len]  # only the short remainder is dropped
    examples = PretrainingExamples("clm", blocks, seed=0)
    item = examples[(2, 1)]
    assert set(item) == {"input_ids"}
    np.testing.assert_array_equal(item["input_ids"], blocks[1]["input_ids"])


# --- collate -------------------------------------------------------------------------------------


def test_collate_pads_each_field_with_its_own_value() -> None:
    items = [
        {
            "input_ids": np.array([CLS, 11, 12, SEP]),
            "mlm_labels": np.array([-100, 11, -100, -100]),
            "token_type_ids": np.array([0, 0, 1, 1]),
            "nsp_labels": np.int64(1),
        },
        {
            "input_ids": np.array([CLS, 13, SEP]),
            "mlm_labels": np.array([-100, 13, -100]),
            "token_type_ids": np.array([0, 1, 1]),
            "nsp_labels": np.int64(0),
        },
    ]
    batch = collate(items, pad_id=7)
    assert batch["input_ids"].tolist() == [[CLS, 11, 12, SEP], [CLS, 13, SEP, 7]]
    assert batch["mlm_labels"].tolist() == [[-100, 11, -100, -100], [-100, 13, -100, -100]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1, 1], [0, 1, 1, 0]]
    assert batch["nsp_labels"].tolist() == [1, 0]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_collate_without_padding_has_no_attention_mask() -> None:
    items = [{"input_ids": np.arange(5)}, {"input_ids": np.arange(5, 10)}]
    batch = collate(items, pad_id=0)
    assert set(batch) == {"input_ids"}
    assert batch["input_ids"].tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


# --- StepSampler ----------------------------------------------------------------------------------


def steps_of(sampler: StepSampler) -> list[list[tuple[int, int]]]:
    """The sampler's keys, regrouped by step (its micro-batches joined)."""
    per_step = -(-(sampler.batch_size // sampler.world_size) // sampler.micro)
    micro_batches = list(sampler)
    return [
        [key for mb in micro_batches[i : i + per_step] for key in mb]
        for i in range(0, len(micro_batches), per_step)
    ]


def test_resuming_at_a_step_gives_the_same_batches() -> None:
    full = steps_of(StepSampler(23, 8, 8, seed=5, max_steps=12))
    for start in (1, 3, 7, 11):
        resumed = steps_of(StepSampler(23, 8, 8, seed=5, start_step=start, max_steps=12))
        assert resumed == full[start:]


def test_ranks_split_the_global_batch() -> None:
    single = StepSampler(23, 8, 8, seed=5, max_steps=10)
    ranks = [StepSampler(23, 8, 4, seed=5, max_steps=10, rank=r, world_size=2) for r in (0, 1)]
    per_rank = [steps_of(sampler) for sampler in ranks]
    for step, keys in enumerate(steps_of(single)):
        parts = [per_rank[r][step] for r in (0, 1)]
        assert len(parts[0]) == len(parts[1]) == 4
        assert sorted(parts[0] + parts[1]) == sorted(keys)
        assert not set(parts[0]) & set(parts[1])


def test_micro_batches_are_the_same_on_any_number_of_ranks() -> None:
    # 4 micro-batches of 4 per step: one process runs all four, 2 ranks two each, 4 ranks one.
    def micro_batches(world_size: int) -> list[list[list[tuple[int, int]]]]:
        samplers = [
            StepSampler(37, 16, 4, seed=3, max_steps=6, rank=r, world_size=world_size)
            for r in range(world_size)
        ]
        return [
            sorted(mb for sampler in samplers for mb in sampler.step_micro_batches(step))
            for step in range(6)
        ]

    single = micro_batches(1)
    assert micro_batches(2) == single
    assert micro_batches(4) == single
    with pytest.raises(ValueError, match="do not split evenly"):
        StepSampler(37, 16, 4, seed=3, rank=0, world_size=3)


def test_every_example_once_per_epoch_across_epoch_boundaries() -> None:
    num_examples, batch_size = 10, 4  # epochs end in the middle of steps 2, 7, ...
    keys = [
        k
        for step in steps_of(StepSampler(num_examples, batch_size, 3, 0, max_steps=15))
        for k in sorted(step)  # (a step's micro-batches interleave its positions)
    ]
    assert len(keys) == 60
    epochs = [k[0] for k in keys]
    assert epochs == sorted(epochs)  # the stream runs through the epochs in order
    for epoch in range(6):
        indices = [index for e, index in keys if e == epoch]
        assert sorted(indices) == list(range(num_examples))
    assert epochs[8:12] == [0, 0, 1, 1]  # step 2 straddles the first boundary


def test_shuffling_depends_on_seed_and_epoch() -> None:
    def order(seed: int, epoch: int, shuffle: bool = True) -> list[int]:
        sampler = StepSampler(50, 50, 50, seed, shuffle=shuffle)
        return [index for _, index in sampler.step_keys(epoch)]

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(1, 0)
    assert order(0, 0) != order(0, 1)
    assert sorted(order(0, 0)) == list(range(50))
    assert order(0, 0, shuffle=False) == list(range(50))


def test_micro_batches() -> None:
    sampler = StepSampler(100, 8, 3, seed=0, max_steps=4)
    micro_batches = list(sampler)
    assert [len(mb) for mb in micro_batches] == [3, 3, 2] * 4
    assert len(sampler) == len(micro_batches)
    assert [k for mb in micro_batches[:3] for k in mb] == sampler.step_keys(0)
    with pytest.raises(TypeError):
        len(StepSampler(100, 8, 3, seed=0))
