"""Where nlptool keeps what it can rebuild: the built-in corpus, tokenized data sets.

Everything under the cache directory may be deleted at any time; it is rebuilt on the next run.
"""

import os
from pathlib import Path

from nlptool.errors import UserError


def nlptool_cache_dir() -> Path:
    """Return the cache directory, creating it if needed.

    `$NLPTOOL_CACHE` if set, else `$XDG_CACHE_HOME/nlptool` (when that is an absolute path, as the
    XDG spec requires), else `~/.cache/nlptool`.
    """
    override = os.environ.get("NLPTOOL_CACHE")
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if override:
        path, source = Path(override).expanduser(), "the environment variable NLPTOOL_CACHE"
    elif os.path.isabs(xdg):
        path, source = Path(xdg) / "nlptool", "the environment variable XDG_CACHE_HOME"
    else:
        path, source = Path.home() / ".cache" / "nlptool", "the default location"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"Cannot create the cache directory {path} (from {source}): {err.strerror or err}. "
            "Set the environment variable NLPTOOL_CACHE to a writable directory."
        ) from err
    return path
