"""`nlptool convert`: a Hugging Face model folder <-> an nlptool checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nlptool.console import console
from nlptool.errors import UserError, check
from nlptool.interop.convert import export_hf, import_hf
from nlptool.interop.hf_folder import download_hf, is_hf_folder
from nlptool.training import checkpoint as ckpt
from nlptool.verbs import RunContext
from nlptool.verbs.loading import model_source


@dataclass
class ConvertConfig:
    """`nlptool convert`: a Hugging Face model folder <-> an nlptool checkpoint."""

    src: str | None = None
    """What to convert: a Hugging Face folder, hf:<hub name>, or an nlptool checkpoint."""
    out: str | None = None
    """The folder to write (created; must not exist unless overwrite=true)."""
    to: str = "nlptool"
    """nlptool (import a Hugging Face model) or hf (export an nlptool checkpoint)."""
    overwrite: bool = False
    """Replace an existing non-empty `out` folder."""

    def validate(self) -> None:
        check(self.to in ("nlptool", "hf"), f"to={self.to!r}: expected nlptool or hf")
        check(bool(self.src), "nlptool convert needs src=<model folder, hf:<name> or checkpoint>")
        check(bool(self.out), "nlptool convert needs out=<folder to write>")


def convert(cfg_dict: DictConfig, ctx: RunContext | None = None) -> Path:
    """nlptool convert: import a Hugging Face model (to=nlptool) or export a checkpoint (to=hf)."""
    try:
        cfg: ConvertConfig = OmegaConf.to_object(cfg_dict)  # type: ignore[assignment]
        cfg.validate()
    except ValueError as err:
        raise UserError(f"Invalid config: {err}") from None
    out = Path(cfg.out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
        raise UserError(f"out={out}: exists and is not an empty folder (add overwrite=true)")
    if cfg.to == "nlptool":
        src = str(cfg.src)
        folder = download_hf(src[3:], "src") if src.startswith("hf:") else Path(src)
        if not is_hf_folder(folder):
            raise UserError(
                f"src={cfg.src}: not a Hugging Face model folder (no config.json)"
                + (
                    " but an nlptool checkpoint already"
                    if (folder / ckpt.MANIFEST).exists()
                    else ""
                )
            )
        report = import_hf(folder, out)
        fresh = f"; new, untrained: {', '.join(report.fresh)}" if report.fresh else ""
        console.print(f"Imported {folder} ({report.architecture}) -> {out}{fresh}")
        return out
    source = model_source(OmegaConf.create({"src": cfg.src, "data": {}}), "src")
    report = export_hf(source, out, overwrite=cfg.overwrite)
    console.print(
        f"Exported {source} as {report.architecture} -> {out} ({', '.join(report.files)})"
    )
    return out
