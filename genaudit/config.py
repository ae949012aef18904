"""Configuration: `[tool.genaudit]` in pyproject.toml or a genaudit.yaml, giving defaults that flags override.

Keys are the long option names (dashes or underscores), at the top level for every command or in a table per
command, e.g.

    [tool.genaudit]
    data = "mnist"
    samples = 1000
    fail-under = ["ablation=0.6"]

    [tool.genaudit.compare]
    jobs = 2
"""

from __future__ import annotations

import os
from pathlib import Path

from genaudit.errors import GenauditError

COMMANDS = ("score", "compare", "watch", "validate", "layers")
RENAMES = {"json": "json_path", "format": "fmt"}  # option name -> the command parameter holding it


def read(folder: Path) -> tuple[dict, Path | None]:
    """The raw settings and the file they came from: $GENAUDIT_CONFIG, else ./genaudit.yaml, else pyproject."""
    candidates = [Path(os.environ["GENAUDIT_CONFIG"])] if os.environ.get("GENAUDIT_CONFIG") else [
        folder / "genaudit.yaml", folder / "genaudit.yml", folder / "pyproject.toml"]
    for path in candidates:
        if not path.is_file():
            continue
        try:
            if path.suffix == ".toml":
                import tomllib

                section = tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {}).get("genaudit")
                if section is None:
                    continue
            else:
                import yaml

                section = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except Exception as exc:
            raise GenauditError(f"Cannot read the configuration in {path}: {exc}. Fix the file or remove it.") from None
        if not isinstance(section, dict):
            raise GenauditError(f"The configuration in {path} must be a table of option = value.")
        return section, path
    return {}, None


def _key(name: str) -> str:
    name = name.replace("-", "_")
    return RENAMES.get(name, name)


def default_map(folder: Path) -> dict:
    """Click's default_map: per command, option name -> default value."""
    section, _ = read(folder)
    tables = {k: v for k, v in section.items() if k in COMMANDS and isinstance(v, dict)}
    shared = {_key(k): v for k, v in section.items() if k not in tables}
    return {command: {**shared, **{_key(k): v for k, v in tables.get(command, {}).items()}} for command in COMMANDS}
