"""The plain, typed description of a model's shape, shared by every architecture.

It is a dataclass on purpose: the model files build from it without knowing about Hydra, and the
CLI registers the same class as the schema of the `model` config group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

ARCHITECTURES = ("bert", "gpt", "seq2seq")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu")


@dataclass
class ModelConfig:
    """Shape and regularisation of a Transformer. Sizes follow the published models."""

    arch: str = "bert"
    """Architecture: bert (bidirectional encoder), gpt (causal decoder), seq2seq (encoder-decoder)."""
    _target_: str | None = None
    """Your own model class (module.Class built as Class(model config); see ModelProtocol),
    used by pretraining in place of the architecture's built-in model."""
    name: str = "custom"
    """Preset name, for logs and checkpoints."""
    num_layers: int = 2
    """Transformer blocks (the encoder's, for seq2seq)."""
    num_decoder_layers: int | None = None
    """Decoder blocks of a seq2seq model; defaults to num_layers."""
    hidden_size: int = 128
    """Width of the residual stream."""
    num_heads: int = 2
    """Attention heads; must divide hidden_size."""
    intermediate_size: int | None = None
    """Feed-forward width; defaults to 4 x hidden_size."""
    max_seq_len: int = 512
    """Number of learned positions (the longest sequence the model accepts)."""
    vocab_size: int = 0
    """Vocabulary size; 0 means: take it from the tokenizer, rounded up to vocab_multiple."""
    vocab_multiple: int = 1
    """A vocabulary size taken from the tokenizer is rounded up to a multiple of this: 64 gives
    the embedding and output matmuls tensor-core-friendly shapes on a GPU (the extra rows are
    never input and learn to score low). 1 (the default) keeps the tokenizer's exact size: on
    small vocabularies the extra classes measurably slow early learning."""
    type_vocab_size: int = 2
    """Segment (token type) embeddings of a BERT encoder."""
    dropout: float = 0.1
    """Dropout on embeddings, attention output and feed-forward output."""
    attention_dropout: float = 0.1
    """Dropout on attention probabilities."""
    activation: str = "gelu"
    """Feed-forward activation: gelu (exact, BERT), gelu_tanh (GPT-2's approximation), relu."""
    layer_norm_eps: float = 1e-12
    """LayerNorm epsilon (BERT 1e-12, GPT-2 1e-5)."""
    initializer_range: float = 0.02
    """Standard deviation of the normal initialisation of weights."""
    tie_word_embeddings: bool = True
    """Share the input embedding matrix with the output (LM) projection."""
    pad_token_id: int = 0
    """Id of the padding token (its embedding row starts at zero)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field when the shape is impossible."""
        if self.arch not in ARCHITECTURES:
            raise ValueError(
                f"model.arch={self.arch!r}: expected one of {', '.join(ARCHITECTURES)}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"model.activation={self.activation!r}: expected one of {', '.join(ACTIVATIONS)}"
            )
        for field in ("num_layers", "hidden_size", "num_heads", "max_seq_len"):
            if getattr(self, field) <= 0:
                raise ValueError(f"model.{field}={getattr(self, field)}: must be positive")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size={self.hidden_size} is not divisible by "
                f"model.num_heads={self.num_heads}"
            )
        for field in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"model.{field}={getattr(self, field)}: must be in [0, 1)")
        if self.vocab_multiple < 1:
            raise ValueError(f"model.vocab_multiple={self.vocab_multiple}: must be >= 1")
        if self.vocab_size < 0:
            raise ValueError(
                f"model.vocab_size={self.vocab_size}: must be >= 0 (0 = from tokenizer)"
            )

    @property
    def ffn_size(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def decoder_layers(self) -> int:
        return self.num_decoder_layers or self.num_layers


class ModelProtocol(Protocol):
    """What a `model._target_` class provides: it is built as `Class(cfg: ModelConfig)` (the
    shape fields, vocab_size filled in from the tokenizer) and is an `nn.Module` whose forward
    gives hidden states (B, T, C). The objective decides what else it calls: `mlm_logits(hidden)`
    for mlm, also `pool(hidden)` and `nsp_logits(pooled)` for mlm_nsp and sop, `lm_logits(hidden)`
    for clm; its `cfg` attribute (this config) lets the trainer count FLOPs."""

    cfg: ModelConfig

    def forward(self, input_ids: Any, attention_mask: Any = None, *args: Any) -> Any: ...
