"""A verb is one module and one line in the verb table: a verb added from outside, with a typed
schema and no YAML of its own, gets Hydra's overrides, the key checks and a run context."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

HELLO = '''
from dataclasses import dataclass
from pathlib import Path


@dataclass
class HelloConfig:
    name: str = "world"
    times: int = 1


def hello(cfg, ctx):
    """Greets, and writes what it was told to its run directory."""
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    (ctx.run_dir / "hello.json").write_text(
        __import__("json").dumps(
            {"text": " ".join([f"hello {cfg.name}"] * cfg.times), "overridden": sorted(ctx.overridden)}
        )
    )
'''

RUN = (
    "import sys, nlptool.cli as cli; "
    "cli.VERBS['hello'] = cli.Verb('hellomod:hello', 'hellomod:HelloConfig', 'Say hello.'); "
    "cli.main(sys.argv[1:])"
)


def hello(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "hellomod.py").write_text(HELLO)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}
    return subprocess.run(
        [sys.executable, "-c", RUN, "hello", *args], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_new_verb_runs_from_its_table_line(tmp_path):
    proc = hello(tmp_path, "name=nlp", "times=2", "hydra.run.dir=out")
    assert proc.returncode == 0, proc.stderr
    written = json.loads((tmp_path / "out" / "hello.json").read_text())
    assert written["text"] == "hello nlp hello nlp"
    assert {"name", "times"} <= set(written["overridden"])


def test_a_new_verb_gets_the_key_checks(tmp_path):
    proc = hello(tmp_path, "nmae=nlp")
    assert proc.returncode == 2
    assert "Unknown config key 'nmae'" in proc.stderr and "Did you mean name?" in proc.stderr
