"""`nlptool generate`: continue a prompt with a causal LM checkpoint, printing tokens as they come."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from nlptool.cache import nlptool_cache_dir
from nlptool.console import console
from nlptool.data.tokenizer import TextTokenizer
from nlptool.errors import UserError, check
from nlptool.interop.sources import resolve_model_source
from nlptool.models import build_model
from nlptool.models.config import ModelConfig
from nlptool.models.sampling import Sampling
from nlptool.models.sampling import generate as generate_tokens
from nlptool.schema import typed_section
from nlptool.training import checkpoint as ckpt
from nlptool.training.config import DEVICES
from nlptool.training.runtime import resolve_device
from nlptool.verbs import RunContext


@dataclass
class GenerateConfig:
    """`nlptool generate`: continue a prompt with a causal LM checkpoint (gpt*)."""

    checkpoint: str | None = None
    """A causal-LM checkpoint: an nlptool checkpoint or run folder, a Hugging Face GPT-2 folder,
    or hf:<name>."""
    prompt: str = ""
    """The text to continue ("" starts from the end-of-text token)."""
    max_new_tokens: int = 100
    temperature: float = 1.0
    """Divides the scores before sampling; 0 is greedy (always the most likely token)."""
    top_k: int = 0
    """Sample among the k most likely tokens only (0: all)."""
    top_p: float = 1.0
    """Sample among the most likely tokens whose probabilities add up to top_p (1: all)."""
    seed: int = 1234
    """Seeds the sampling: the same seed, the same text."""
    num_samples: int = 1
    """Continuations to write, one after the other (each from the same prompt)."""
    device: str = "auto"
    stream: bool = True
    """Print tokens as they are chosen; false: print each continuation when complete."""
    cache_dir: str | None = None
    """Where Hugging Face imports are kept (default: the nlptool cache)."""

    def validate(self) -> None:
        check(bool(self.checkpoint), "nlptool generate needs checkpoint=<a gpt checkpoint>")
        check(self.max_new_tokens >= 1, "max_new_tokens must be >= 1")
        check(self.temperature >= 0, f"temperature={self.temperature}: must be >= 0 (0: greedy)")
        check(self.top_k >= 0, f"top_k={self.top_k}: must be >= 0 (0: no cut)")
        check(0 < self.top_p <= 1, f"top_p={self.top_p}: must be in (0, 1]")
        check(self.num_samples >= 1, "num_samples must be >= 1")
        check(self.device in DEVICES, f"device={self.device!r}: expected one of {DEVICES}")


def generate(cfg_dict: DictConfig, ctx: RunContext | None = None) -> list[str]:
    """nlptool generate: continue the prompt with a causal LM, streaming the text to stdout."""
    console.stderr = True  # stdout carries the generated text alone (pipe it anywhere)
    try:
        cfg: GenerateConfig = OmegaConf.to_object(cfg_dict)  # type: ignore[assignment]
        cfg.validate()
    except ValueError as err:
        raise UserError(f"Invalid config: {err}") from None
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else nlptool_cache_dir()
    path = resolve_model_source(str(cfg.checkpoint), "checkpoint", cache)
    saved = ckpt.saved_config(path)
    if saved.model.arch != "gpt" or (saved.get("task") and saved.task.kind != "lm"):
        what = f"fine-tuned on {saved.task.name}" if saved.get("task") else saved.model.arch
        raise UserError(
            f"checkpoint={path} is not a causal language model ({what}): nlptool generate needs "
            "a gpt* checkpoint pretrained with objective=clm, or a Hugging Face GPT-2"
        )
    model_cfg = typed_section(saved, "model", ModelConfig)
    tokenizer = TextTokenizer.load(path)
    device = resolve_device(cfg.device)
    model = build_model(model_cfg)
    ckpt.load_weights(model, path)
    model.to(device).eval()
    eos = tokenizer.ids.get("eos")
    prompt = tokenizer.encode_batch([cfg.prompt])[0] if cfg.prompt else []
    if not prompt:
        prompt = [tokenizer.require("eos", "an empty prompt")]
    room = model_cfg.max_seq_len - 1
    if len(prompt) > room:
        console.print(
            f"[yellow]The prompt has {len(prompt)} tokens; the model sees {model_cfg.max_seq_len}"
            f" positions: generating after its last {room}.[/]"
        )
        prompt = prompt[-room:]
    sampling = Sampling(cfg.temperature, cfg.top_k, cfg.top_p)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    out, texts = sys.stdout, []
    for sample in range(cfg.num_samples):
        if sample:
            out.write("\n" + "-" * 40 + "\n")
        out.write(cfg.prompt)
        out.flush()
        ids: list[int] = []
        shown = ""
        started = time.perf_counter()
        for token in generate_tokens(model, prompt, cfg.max_new_tokens, sampling, eos, generator):
            ids.append(token)
            text = tokenizer.decode(ids)
            if cfg.stream and not text.endswith("\ufffd"):  # (not in the middle of a character)
                out.write(text[len(shown) :])
                out.flush()
                shown = text
        text = tokenizer.decode(ids)
        out.write(text[len(shown) :] + "\n")
        out.flush()
        texts.append(text)
        seconds = time.perf_counter() - started
        print(
            f"[{len(ids)} tokens in {seconds:.2f}s, {len(ids) / max(seconds, 1e-9):.1f} tokens/s]",
            file=sys.stderr,
        )
    return texts
