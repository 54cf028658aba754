"""Pretraining examples: packed blocks (mlm, clm), NSP sentence pairs, MLM masking, batching.

Every random choice here (shuffling, NSP pairing, masking) draws from a generator seeded by
(seed, stream, epoch, example index), never from a stream that advances as batches are drawn:
then the batch of any step can be rebuilt from its number alone, so resuming mid-epoch is exact
and the data do not change with the number of processes or workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import datasets
import numpy as np
import torch

from nlptool.data.collate import IGNORE_INDEX, pad_batch
from nlptool.errors import UserError

# Separate random streams, so that e.g. the masks do not correlate with the shuffling.
STREAM_SHUFFLE, STREAM_EXAMPLE = 1, 2


def example_rng(seed: int, stream: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, epoch, index])


def split_seed(seed: int, valid: bool) -> int:
    """The seed of a split's examples: validation draws its masks from a stream of its own."""
    return seed + (7919 if valid else 0)


# ---------------------------------------------------------------------------------------------
# Example builders: tokenized documents -> fixed examples (deterministic, cached by datasets)


class _PackBlocks:
    """Join documents (each followed by `separator`) and cut the stream into `block_len` tokens."""

    def __init__(self, block_len: int, separator: int) -> None:
        self.block_len, self.separator = block_len, separator

    def __call__(self, batch: dict) -> dict:
        stream: list[int] = []
        for segments in batch["segments"]:
            for seg in segments:
                stream.extend(seg)
            stream.append(self.separator)
        n = len(stream) // self.block_len * self.block_len  # drop the remainder of this batch
        return {"input_ids": [stream[i : i + self.block_len] for i in range(0, n, self.block_len)]}


def pack_blocks(docs: datasets.Dataset, block_len: int, separator: int) -> datasets.Dataset:
    """Contiguous blocks of `block_len` tokens; documents are separated by `separator`."""
    return docs.map(
        _PackBlocks(block_len, separator),
        batched=True,
        batch_size=2000,
        remove_columns=docs.column_names,
        desc="Packing",
    )


class _NspInstances:
    """Cut each document into runs of whole segments of about `target_len` tokens."""

    def __init__(self, target_len: int) -> None:
        self.target_len = target_len

    def __call__(self, batch: dict, indices: list[int]) -> dict:
        out: dict[str, list[int]] = {"doc": [], "start": [], "end": []}
        for doc, segments in zip(indices, batch["segments"]):
            start, length = 0, 0
            for i, seg in enumerate(segments):
                length += len(seg)
                if length >= self.target_len or i == len(segments) - 1:
                    out["doc"].append(doc)
                    out["start"].append(start)
                    out["end"].append(i + 1)
                    start, length = i + 1, 0
        return out


def nsp_instances(docs: datasets.Dataset, max_seq_len: int) -> datasets.Dataset:
    """(doc, start, end) segment ranges; the pair is drawn from one at sampling time."""
    if len(docs) < 2:
        raise UserError(
            "objective=mlm_nsp needs at least two documents to draw random next segments"
        )
    return docs.map(
        _NspInstances(max_seq_len - 3),
        batched=True,
        with_indices=True,
        remove_columns=docs.column_names,
        desc="Pairing",
    )


# ---------------------------------------------------------------------------------------------
# Per-example random choices


@dataclass
class MaskingConfig:
    mask_rate: float
    mask_token_prob: float
    random_token_prob: float
    mask_id: int
    vocab_size: int
    special_ids: np.ndarray  # ids never selected for prediction, nor drawn as random tokens
    # Whole-word masking: True for the ids that continue a word (WordPiece "##" pieces); a word
    # is a token and the continuation pieces after it, masked all together. None: per token.
    continuation: np.ndarray | None = None


def mask_tokens(
    input_ids: np.ndarray, cfg: MaskingConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking: pick max(1, round(rate * n)) non-special positions; of them 80% become [MASK],
    10% a random ordinary token, 10% stay as they are.

    Returns (masked input ids, labels with IGNORE_INDEX where nothing is predicted).
    """
    candidates = np.flatnonzero(~np.isin(input_ids, cfg.special_ids))
    labels = np.full_like(input_ids, IGNORE_INDEX)
    if len(candidates) == 0:
        return input_ids, labels
    k = max(1, int(round(len(candidates) * cfg.mask_rate)))
    if cfg.continuation is None:
        chosen = rng.choice(candidates, size=k, replace=False)
    else:
        chosen = _whole_words(input_ids, candidates, cfg.continuation, k, rng)
        k = len(chosen)
    labels[chosen] = input_ids[chosen]
    out = input_ids.copy()
    action = rng.random(k)
    to_mask = action < cfg.mask_token_prob
    to_random = (action >= cfg.mask_token_prob) & (
        action < cfg.mask_token_prob + cfg.random_token_prob
    )
    out[chosen[to_mask]] = cfg.mask_id
    if to_random.any():
        # Random replacements are drawn among the ordinary (non-special) tokens.
        ordinary = rng.integers(0, cfg.vocab_size - len(cfg.special_ids), size=int(to_random.sum()))
        for special in np.sort(cfg.special_ids):
            ordinary = ordinary + (ordinary >= special)
        out[chosen[to_random]] = ordinary
    return out, labels


def _whole_words(
    input_ids: np.ndarray,
    candidates: np.ndarray,
    continuation: np.ndarray,
    k: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Positions of whole words, drawn in random order until about k tokens are covered (a word
    that would overshoot k is passed over, as in Google's BERT and Hugging Face's whole-word
    collator). A word starts at a candidate that is not a continuation piece, or whose left
    neighbour is not a candidate (a special token); CJK characters, which the WordPiece
    pre-tokenizer splits one by one, are each a word."""
    is_piece = continuation[input_ids[candidates]]
    follows = np.r_[False, np.diff(candidates) == 1]
    starts = ~(is_piece & follows)
    words = np.split(candidates, np.flatnonzero(starts)[1:])
    chosen: list[np.ndarray] = []
    covered = 0
    for w in rng.permutation(len(words)):
        if covered >= k:
            break
        if covered + len(words[w]) > k and covered > 0:
            continue
        chosen.append(words[w])
        covered += len(words[w])
    return np.concatenate(chosen)


def _truncate_pair(a: list[int], b: list[int], max_len: int, rng: np.random.Generator) -> None:
    """Trim the longer segment, from its front or back at random, until the pair fits (BERT)."""
    # A very long segment is first cut to the budget (its end), so the loop stays short.
    del a[max_len:], b[max_len:]
    while len(a) + len(b) > max_len:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def _concat(segments: list[list[int]]) -> list[int]:
    return [t for seg in segments for t in seg]


class PretrainingExamples(torch.utils.data.Dataset):
    """Map-style data set keyed by (epoch, index): the example with its random choices applied.

    kind: "clm" (blocks as they are), "mlm" (blocks wrapped in [CLS] ... [SEP], then masked),
    "mlm_nsp" (an NSP sentence pair drawn from an instance, then masked), "sop" (two consecutive
    segments of an instance, swapped with probability sop_swap_prob, then masked).
    """

    def __init__(
        self,
        kind: str,
        examples: datasets.Dataset,
        seed: int,
        *,
        docs: datasets.Dataset | None = None,
        masking: MaskingConfig | None = None,
        cls_id: int | None = None,
        sep_id: int | None = None,
        max_seq_len: int = 128,
        nsp_random_prob: float = 0.5,
        sop_swap_prob: float = 0.5,
    ) -> None:
        self.kind, self.examples, self.seed = kind, examples, seed
        self.docs, self.masking = docs, masking
        self.cls_id, self.sep_id = cls_id, sep_id
        self.max_seq_len, self.nsp_random_prob = max_seq_len, nsp_random_prob
        self.sop_swap_prob = sop_swap_prob

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, np.ndarray]:
        epoch, index = key
        rng = example_rng(self.seed, STREAM_EXAMPLE, epoch, index)
        row = self.examples[int(index)]
        if self.kind == "clm":
            return {"input_ids": np.asarray(row["input_ids"], dtype=np.int64)}
        if self.kind == "mlm":
            ids = np.asarray([self.cls_id, *row["input_ids"], self.sep_id], dtype=np.int64)
            item = {}
        elif self.kind == "sop":
            ids, token_types, swapped = self._sop_pair(row, rng)
            item = {"token_type_ids": token_types, "sop_labels": np.int64(swapped)}
        else:
            ids, token_types, is_random = self._nsp_pair(row, rng)
            item = {"token_type_ids": token_types, "nsp_labels": np.int64(is_random)}
        item["input_ids"], item["mlm_labels"] = mask_tokens(ids, self.masking, rng)
        return item

    def _consecutive(self, row: dict, rng: np.random.Generator) -> tuple[list[int], list[int]]:
        """Two consecutive runs of the instance's segments: A, then B that follows it (B may be
        empty when the instance is one token)."""
        segments = self.docs[int(row["doc"])]["segments"][row["start"] : row["end"]]
        target = self.max_seq_len - 3
        if len(segments) == 1:  # one long segment: split it inside, so B still follows A
            seg = segments[0][:target]
            cut = int(rng.integers(1, len(seg))) if len(seg) > 1 else 1
            segments = [seg[:cut], seg[cut:]]
        a_end = int(rng.integers(1, len(segments))) if len(segments) > 1 else 1
        return _concat(segments[:a_end]), _concat(segments[a_end:])

    def _pair_ids(self, a: list[int], b: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """[CLS] a [SEP] b [SEP] and its token types (0 for [CLS] a [SEP], 1 after)."""
        ids = np.asarray([self.cls_id, *a, self.sep_id, *b, self.sep_id], dtype=np.int64)
        token_types = np.zeros(len(ids), dtype=np.int64)
        token_types[len(a) + 2 :] = 1
        return ids, token_types

    def _sop_pair(self, row: dict, rng: np.random.Generator):
        """Sentence-order prediction (ALBERT): two consecutive segments of one document, in their
        order (label 0) or swapped (label 1, p = sop_swap_prob). Both classes come from the same
        document, so the task is about order and coherence, not topic (NSP's shortcut)."""
        a, b = self._consecutive(row, rng)
        if not b:  # a one-token instance: split what there is so both sides hold text
            a, b = a[:1], a[1:] or a[:1]
        swapped = bool(rng.random() < self.sop_swap_prob)
        _truncate_pair(a, b, self.max_seq_len - 3, rng)
        first, second = (b, a) if swapped else (a, b)
        ids, token_types = self._pair_ids(first, second)
        return ids, token_types, swapped

    def _nsp_pair(self, row: dict, rng: np.random.Generator):
        """Segment A from the instance; B is its continuation, or (p = nsp_random_prob) text from
        another document. Label 0 = B follows A, 1 = B is random (the Hugging Face convention)."""
        target = self.max_seq_len - 3
        a, b = self._consecutive(row, rng)
        is_random = bool(rng.random() < self.nsp_random_prob) or not b
        if is_random:
            b = self._random_segment_run(int(row["doc"]), max(1, target - len(a)), rng)
        _truncate_pair(a, b, target, rng)
        ids, token_types = self._pair_ids(a, b)
        return ids, token_types, is_random

    def _random_segment_run(self, avoid_doc: int, length: int, rng: np.random.Generator):
        num_docs = len(self.docs)
        other = int(rng.integers(0, num_docs - 1))
        other += other >= avoid_doc  # uniform over the other documents
        segments = self.docs[other]["segments"]
        start = int(rng.integers(0, len(segments)))
        out: list[int] = []
        for seg in segments[start:]:
            out.extend(seg)
            if len(out) >= length:
                break
        return out


class FirstExamples(torch.utils.data.Dataset):
    """The first `limit` examples of a data set keyed by (epoch, index) (data.max_valid_examples):
    the same examples, with the same random choices, as in the whole set."""

    def __init__(self, examples: torch.utils.data.Dataset, limit: int) -> None:
        self.examples, self.limit = examples, limit

    def __len__(self) -> int:
        return min(self.limit, len(self.examples))

    def __getitem__(self, key: tuple[int, int]) -> dict[str, np.ndarray]:
        return self.examples[key]


def collate(items: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack examples, padding to the longest in the batch (dynamic padding).

    `attention_mask` is added only when some example is shorter than the longest, so that
    full batches of packed blocks run the attention without a mask.
    """
    return pad_batch(items, {"input_ids": pad_id, "mlm_labels": IGNORE_INDEX})


# ---------------------------------------------------------------------------------------------
# Which examples make up each step


class StepSampler(torch.utils.data.Sampler):
    """Yields the micro-batches of (epoch, index) keys of steps start_step, start_step + 1, ...

    The examples are an endless stream of epochs, each a permutation drawn from (seed, epoch).
    Step s takes the stream positions [s * batch_size, (s + 1) * batch_size), dealt into
    G = ceil(batch_size / micro_batch_size) micro-batches: micro-batch g holds the positions
    g, g + G, g + 2G, ... of the step. Rank r of world_size runs micro-batches r, r + world_size,
    ... So the batch of a step is a function of its number, and each micro-batch is the same on
    one process or many: N ranks compute what one process computes, only spread out.
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        micro_batch_size: int,
        seed: int,
        start_step: int = 0,
        max_steps: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        lengths: np.ndarray | None = None,
    ) -> None:
        if num_examples == 0:
            raise UserError("The training data yield no example: the corpus is too small")
        self.num_examples, self.batch_size, self.micro = num_examples, batch_size, micro_batch_size
        self.seed, self.start_step, self.max_steps = seed, start_step, max_steps
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.groups = -(-batch_size // micro_batch_size)  # micro-batches per step, all ranks
        if self.groups % world_size:
            raise ValueError(
                f"{self.groups} micro-batches of {micro_batch_size} per step do not split evenly "
                f"over {world_size} ranks"
            )
        self._perm_epoch, self._perm = -1, np.arange(0)
        # With lengths, batches are grouped by length: less padding, same randomness contract.
        self.lengths = None if lengths is None else np.asarray(lengths)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            if self.shuffle:
                rng = example_rng(self.seed, STREAM_SHUFFLE, epoch, 0)
                self._perm = rng.permutation(self.num_examples)
                if self.lengths is not None:
                    self._perm = self._group_by_length(self._perm, rng)
            else:
                self._perm = np.arange(self.num_examples)
            self._perm_epoch = epoch
        return self._perm

    def _group_by_length(self, perm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sort each pool of 64 batches' worth of the shuffled examples by length, cut the pool
        into batches and shuffle the batches: each batch holds examples of similar length."""
        pool = self.batch_size * 64
        batches = []
        for start in range(0, len(perm), pool):
            chunk = perm[start : start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(
                chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)
            )
        order = rng.permutation(len(batches))
        return np.concatenate([batches[i] for i in order])

    def step_micro_batches(self, step: int) -> list[list[tuple[int, int]]]:
        """This process's micro-batches of one step, as (epoch, index) keys."""
        first = step * self.batch_size
        out = []
        for group in range(self.rank, self.groups, self.world_size):
            keys = []
            for pos in range(first + group, first + self.batch_size, self.groups):
                epoch, offset = divmod(pos, self.num_examples)
                keys.append((epoch, int(self._permutation(epoch)[offset])))
            out.append(keys)
        return out

    def step_keys(self, step: int) -> list[tuple[int, int]]:
        """This process's (epoch, index) keys of one step."""
        return [key for keys in self.step_micro_batches(step) for key in keys]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while self.max_steps is None or step < self.max_steps:
            yield from self.step_micro_batches(step)
            step += 1

    def __len__(self) -> int:
        if self.max_steps is None:
            raise TypeError("an endless sampler has no length")
        return (self.max_steps - self.start_step) * (self.groups // self.world_size)
