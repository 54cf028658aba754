"""The wheel carries every subpackage and the YAML configs (a plain `pip install .` works)."""

from __future__ import annotations

import tomllib

from tests.conftest import REPO


def test_every_subpackage_is_listed_for_the_wheel():
    setuptools_cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools_cfg["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "nlptool").rglob("__init__.py")
    }
    on_disk |= {
        f"nlptool.configs.{group.name}"
        for group in (REPO / "configs").iterdir()
        if group.is_dir() and group.name != "__pycache__"
    }
    assert on_disk <= listed, f"add to pyproject.toml: {sorted(on_disk - listed)}"
    assert setuptools_cfg["package-dir"]["nlptool.configs"] == "configs"
    assert (REPO / "configs" / "__init__.py").is_file()


def test_every_config_folder_ships_its_yamls():
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    for folder in [REPO / "configs", *(REPO / "configs").iterdir()]:
        if folder.is_dir() and folder.name != "__pycache__" and list(folder.glob("*.yaml")):
            name = "nlptool.configs" + ("" if folder.name == "configs" else f".{folder.name}")
            assert "*.yaml" in package_data.get(name, []), name
