"""Configuration: `[tool.genaudit]` in pyproject.toml or a genaudit.yaml, giving defaults that flags override.

Keys are the long option names (dashes or underscores), at the top level for every command or in a table per
command, e.g.

    [tool.genaudit]
    data = "mnist"
    samples = 1000
    fail-under = ["ablation=0.6"]

    [tool.genaudit.compare]
    jobs = 2

One file is read: the one $GENAUDIT_CONFIG names (it must exist), else ./genaudit.yaml, else ./genaudit.yml, else
./pyproject.toml when it has a [tool.genaudit] table; when several are present, the command line says which one
it read. A configuration file is untrusted input: YAML is read with `yaml.safe_load` (no Python objects), a file
is at most 1 MiB, a value is a string, number, boolean or a list of them, and the command line checks every key
(an unknown one gets the nearest known key) and every value (as its flag's) before any work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from genaudit.errors import GenauditError, did_you_mean

RENAMES = {"json": "json_path", "format": "fmt", "csv": "csv_path"}  # option name -> the command parameter holding it
MAX_BYTES = 1 << 20  # a configuration file is read whole: far more than any needs, and bounded
SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class Config:
    """The configuration file read (None: there is none), its settings, and the other configuration files
    present that are not read."""

    path: Path | None = None
    section: dict = field(default_factory=dict)
    ignored: tuple[Path, ...] = ()

    def default_map(self, known: dict[str, set[str]]) -> dict:
        """Click's default_map: per command, option name -> default value. `known` holds the commands a file may
        configure, each with the names of its parameters: the command line's own commands that take options
        (genaudit.cli.configured reads them from the commands themselves, so a new command is configurable
        without an entry here). A key that no command takes, or that its table's command does not take, is a
        user error naming the file and the nearest known key."""
        tables = {k: v for k, v in self.section.items() if k in known}
        shared = {k: v for k, v in self.section.items() if k not in known}
        for command, table in tables.items():
            if not isinstance(table, dict):
                raise GenauditError(f"In {self.path}, '{command}' must be a table of that command's options "
                                    f"([tool.genaudit.{command}], or a '{command}:' mapping in YAML).")
        for where, settings in [(None, shared), *tables.items()]:
            self._check_keys(settings, set().union(*known.values()) if where is None else known[where], where,
                             list(known))
            for key, value in settings.items():
                if not (isinstance(value, SCALARS) or isinstance(value, list) and all(isinstance(v, SCALARS)
                                                                                       for v in value)):
                    raise GenauditError(f"In {self.path}, '{key}' must be a string, a number, true/false or a list "
                                        f"of them (got {type(value).__name__}).")
        return {command: {**{_key(k): v for k, v in shared.items()},
                          **{_key(k): v for k, v in tables.get(command, {}).items()}} for command in known}

    def _check_keys(self, settings: dict, names: set[str], where: str | None, commands: list[str]) -> None:
        spelled = {spelling(n) for n in names} | (set() if where else set(commands))
        for key in settings:
            if _key(key) not in names:
                hint = did_you_mean(spelling(_key(key)), spelled)
                table = f" (in the '{where}' table)" if where else ""
                raise GenauditError(
                    f"In {self.path}, '{key}'{table} is not an option of "
                    f"{'genaudit ' + where if where else 'any genaudit command'}.{hint} Keys are the long options "
                    f"without their dashes (genaudit {where or 'COMMAND'} --help)"
                    f"{'' if where else ', or a table per command: ' + ', '.join(commands)}.")


def read(folder: Path) -> Config:
    """The configuration for a run in `folder`: the file $GENAUDIT_CONFIG names (a missing one is a user error,
    not silently no configuration), else the first of genaudit.yaml, genaudit.yml and pyproject.toml (with a
    [tool.genaudit] table) in `folder`; the others present are listed as `ignored`."""
    named = os.environ.get("GENAUDIT_CONFIG")
    if named and not Path(named).is_file():
        state = "is a folder" if Path(named).is_dir() else "does not exist"
        raise GenauditError(f"GENAUDIT_CONFIG names {named}, which {state}. Point it at a genaudit.yaml or a "
                            "pyproject.toml with a [tool.genaudit] table, or unset it.")
    local = [folder / "genaudit.yaml", folder / "genaudit.yml", folder / "pyproject.toml"]
    candidates = list({p.resolve(): p for p in [*([Path(named)] if named else []), *local] if p.is_file()}.values())
    chosen, ignored = None, []
    for path in candidates:
        if chosen is not None:
            if path.suffix != ".toml" or _declares(path):
                ignored.append(path)
            continue
        section = _section(path)
        if section is not None:
            chosen = Config(path, section)
        elif named:
            raise GenauditError(f"GENAUDIT_CONFIG names {named}, which has no [tool.genaudit] table. Add one, or "
                                "point GENAUDIT_CONFIG at the file that has it.")
    return Config() if chosen is None else Config(chosen.path, chosen.section, tuple(ignored))


def _section(path: Path) -> dict | None:
    """The genaudit settings a file holds (None: a TOML file without [tool.genaudit]); a file too large,
    unreadable, or not a table of settings is a user error naming it."""
    if path.stat().st_size > MAX_BYTES:
        raise GenauditError(f"The configuration {path} is {path.stat().st_size} bytes; a configuration file is at "
                            f"most {MAX_BYTES} bytes. Point GENAUDIT_CONFIG at the right file, or trim it.")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            import tomllib

            section = tomllib.loads(text).get("tool", {}).get("genaudit")
            if section is None:
                return None
        else:
            import yaml

            section = yaml.safe_load(text) or {}  # safe_load: plain data only, never a Python object
    except Exception as exc:
        raise GenauditError(f"Cannot read the configuration in {path}: {exc}. Fix the file or remove it.") from None
    if not isinstance(section, dict):
        raise GenauditError(f"The configuration in {path} must be a table of option = value.")
    return section


def _declares(path: Path) -> bool:
    """Whether a TOML file that is not read has a [tool.genaudit] table (an unreadable one: cannot tell, no)."""
    try:
        return _section(path) is not None
    except GenauditError:
        return False


def _key(name: str) -> str:
    """A configuration key as the command's parameter name."""
    name = str(name).replace("-", "_")
    return RENAMES.get(name, name)


def spelling(parameter: str) -> str:
    """A command's parameter name as a configuration key is written (the long option without its dashes)."""
    return {v: k for k, v in RENAMES.items()}.get(parameter, parameter).replace("_", "-")
