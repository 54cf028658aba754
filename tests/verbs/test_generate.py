"""nlptool generate, end to end: a checkpoint of ours or a Hugging Face GPT-2 folder."""

from __future__ import annotations

import pytest
import torch

from tests.test_cli import nlptool


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory) -> str:
    cwd = tmp_path_factory.mktemp("gpt")
    nlptool(
        "pretrain", "model=gpt-tiny", "objective=clm", "tokenizer=bpe", "trainer=smoke",
        "trainer.max_steps=20", "trainer.progress=false", "hydra.run.dir=run", cwd=cwd,
    )  # fmt: skip
    return str(cwd / "run")


def flat(text: str) -> str:
    """An error panel's text on one line, without its borders."""
    return " ".join(" ".join(line.strip("│ ") for line in text.splitlines()).split())


def generate(*args: str, cwd, check: bool = True):
    return nlptool("generate", *args, cwd=cwd, check=check)


def test_a_seed_fixes_the_sampled_text(gpt_run, tmp_path):
    args = [f"checkpoint={gpt_run}", "prompt=The function", "max_new_tokens=16", "top_k=50"]
    first = generate(*args, "seed=3", cwd=tmp_path)
    assert first.stdout.startswith("The function") and len(first.stdout) > len("The function")
    assert "tokens/s" in first.stderr
    assert generate(*args, "seed=3", cwd=tmp_path).stdout == first.stdout
    others = {generate(*args, f"seed={s}", cwd=tmp_path).stdout for s in (4, 5, 6)}
    assert others - {first.stdout}  # other seeds, other text
    assert not list(tmp_path.iterdir())  # no run directory: the text goes to stdout


def test_greedy_samples_agree(gpt_run, tmp_path):
    out = generate(
        f"checkpoint={gpt_run}", "prompt=", "temperature=0", "num_samples=2",
        "max_new_tokens=8", "stream=false", cwd=tmp_path,
    ).stdout  # fmt: skip
    first, second = out.split("\n" + "-" * 40 + "\n")
    assert first.strip() == second.strip()


def test_greedy_text_of_a_hugging_face_gpt2_is_its_own_generate(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tests.interop.test_convert import hf_gpt2_folder

    folder = tmp_path / "hf-gpt2"
    model = hf_gpt2_folder(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    prompt = "the model reads the text"
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = model.generate(
            ids, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, ids.shape[1] :]
    out = generate(
        f"checkpoint={folder}", f"prompt={prompt}", "temperature=0", "max_new_tokens=12",
        f"+cache_dir={tmp_path / 'cache'}", cwd=tmp_path,
    ).stdout  # fmt: skip
    assert out == prompt + tokenizer.decode(expected, skip_special_tokens=True) + "\n"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["temperature=-1"], "temperature=-1.0: must be >= 0"),
        (["top_p=0"], "top_p=0.0: must be in (0, 1]"),
        (["tempreature=1"], "Did you mean temperature?"),
    ],
)
def test_bad_settings_are_clear_errors(gpt_run, tmp_path, args, needle):
    proc = generate(f"checkpoint={gpt_run}", *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert needle in flat(proc.stderr)


def test_an_encoder_checkpoint_is_refused(tmp_path):
    nlptool("pretrain", "trainer=smoke", "trainer.max_steps=2", "hydra.run.dir=bert", cwd=tmp_path)
    proc = generate(f"checkpoint={tmp_path / 'bert'}", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "is not a causal language model (bert)" in flat(proc.stderr)
