"""How the suite's Hydra apps start, and how Hydra's refusals read: one ``error: ...`` line.

Hydra composes every command line and refuses a bad one itself: an option a config group
does not have (``MissingConfigException``, with the options on its search path) or a key the
composed config does not have (struct mode's ``ConfigKeyError``, raised as a
``ConfigCompositionException`` that carries the node the key was looked for in). Its message
runs to a dozen lines with the search path; users asked for one line that says what was wrong
and what is allowed. ``run_app`` lets those exceptions reach the suite instead of Hydra's
printer, and ``one_line`` rewrites them with a did-you-mean. Nothing here imports
``hydra._internal``: composition and the config loader are Hydra's public API.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import (CompactHydraException, ConfigCompositionException, HydraException, MissingConfigException,
                          OverrideParseException, SearchPathException)
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError


def config_dir() -> Path:
    """The suite's own config tree: package data when installed, ``conf/`` in a checkout.

    A wheel ships ``conf/`` as the package ``runners.conf`` (see ``pyproject.toml``), so
    ``rnn-bench`` finds its presets from any directory; a checkout (and an editable
    install) reads ``conf/`` beside ``runners/``, where users edit it.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    return here.parent / "conf"


CONF_DIR = config_dir()


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The options of a config group, as Hydra lists them on the suite's search path (plugins included)."""
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return GlobalHydra.instance().config_loader().get_group_options(group)


def fail(message: str) -> None:
    """The suite's answer to bad input: one line on stderr and exit status 2, before any work."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


# Hydra's flags that take a value (``-cd DIR``): that value is not an override.
_VALUE_FLAGS = {"-cp": "config_path", "--config-path": "config_path", "-cn": "config_name",
                "--config-name": "config_name", "-cd": "config_dir", "--config-dir": "config_dir",
                "-c": None, "--cfg": None, "-p": None, "--package": None, "--experimental-rerun": None}


@dataclass
class CommandLine:
    """What a Hydra command line composes from: its overrides and its config flags."""

    overrides: list[str] = field(default_factory=list)
    config_dir: str | None = None
    config_path: str | None = None
    config_name: str | None = None

    @classmethod
    def parse(cls, argv: list[str]) -> CommandLine:
        """Split ``argv`` as Hydra's own parser does: flags (``-cd DIR``, ``--cfg=job``), then overrides."""
        line, words = cls(), iter(argv)
        for word in words:
            flag, eq, value = word.partition("=")
            if flag in _VALUE_FLAGS:
                value = value if eq else next(words, None)
                if _VALUE_FLAGS[flag]:
                    setattr(line, _VALUE_FLAGS[flag], value)
            elif not word.startswith("-"):
                line.overrides.append(word)
        return line


def run_app(app: Callable[[], Any], conf_dir: Path, config_name: str, argv: list[str] | None = None) -> None:
    """Run ``app`` (a ``@hydra.main`` function); Hydra's composition errors end as one line, status 2.

    Hydra prints its errors itself unless ``HYDRA_FULL_ERROR=1`` (documented: it then raises
    them), so the variable is set for the call and the error is written here. A user who set
    it gets Hydra's full error, as before. Everything else (``--help``, ``-sc``, ``--cfg``,
    ``-m``) is Hydra's, untouched.
    """
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except HydraException as e:
        if before == "1":
            raise
        message = one_line(e, CommandLine.parse(sys.argv[1:] if argv is None else argv), conf_dir, config_name)
        if message is not None:
            fail(message)
        if not isinstance(e, CompactHydraException):
            raise
        print(e, file=sys.stderr)  # as Hydra prints its own compact errors
        raise SystemExit(1) from None
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def one_line(error: Exception, command: CommandLine, conf_dir: Path, config_name: str) -> str | None:
    """The suite's one-line message for a Hydra composition error, or None for one it does not rewrite."""
    missing_option = isinstance(error, MissingConfigException) and "/" in (error.missing_cfg_file or "")
    if missing_option and error.options is not None:
        group, value = error.missing_cfg_file.rsplit("/", 1)
        return f"{group}={value} is unknown; choose one of: {', '.join(error.options)}"
    cause = error.__cause__
    missing = re.match(r"Could not override '([^']+)'", str(error))
    if isinstance(error, ConfigCompositionException) and missing and isinstance(cause, (ConfigKeyError,
                                                                                         ConfigAttributeError)):
        return _unknown_key(missing.group(1), cause, command, conf_dir, config_name)
    if isinstance(error, OverrideParseException):
        return (f"{error.override} is not an override Hydra can read ({_first_line(error)}); "
                "see https://hydra.cc/docs/advanced/override_grammar/basic/")
    if isinstance(error, (ConfigCompositionException, MissingConfigException, SearchPathException)):
        detail = f": {_first_line(cause)}" if cause is not None else ""
        return f"{_paragraph(error).rstrip('.')}{detail}"
    return None


def _paragraph(e: BaseException) -> str:
    """Hydra's first paragraph in one line: its advice (``add --multirun``) without its search-path listing."""
    return " ".join(line.strip() for line in str(e).strip().split("\n\n")[0].splitlines())


def _unknown_key(key: str, cause: Exception, command: CommandLine, conf_dir: Path, config_name: str) -> str:
    """``trian.epochs`` or ``scheme.granularity`` (under ``scheme=none``) as one line.

    The node the key was looked for in comes with the error. When that node is a config
    group's option, the line names the option chosen and the options that take the key,
    found by composing them on the command line's own search path.
    """
    parent = cause.parent_node
    path = cause.full_key.rpartition(".")[0] if "." in (cause.full_key or "") else ""
    have = {str(k) for k in parent.keys()} - {"hydra"} if parent is not None else set()
    candidates, listing, apply = set(have), "top-level keys" if not path else f"{path} has", None
    with _composing(command, conf_dir, config_name, cause) as ctx:
        if ctx is not None:
            group = path.replace(".", "/")
            options = ctx.options(group) if path else []
            if not path:
                candidates |= set(ctx.options("", groups=True)) - {"hydra"}
            elif options:
                keys = {option: ctx.keys(group, option) for option in options}
                candidates = set().union(have, *keys.values())
                takers = [o for o in options if cause.key in keys[o]]
                choice = ctx.choice(group, drop=key)
                if takers and choice:
                    apply = (f"{key} does not apply to {group}={choice} (its keys: {', '.join(sorted(have))}); "
                             f"{group} options that take it: {', '.join(takers)}")
    if apply:
        return apply
    close = difflib.get_close_matches(str(cause.key), sorted(candidates), n=1)
    hint = f" (did you mean {path + '.' if path else ''}{close[0]}?)" if close else ""
    return f"{key} is not a config key{hint}; {listing}: {', '.join(sorted(candidates))}"


@dataclass
class _Context:
    """Compositions on one command line's search path (inside ``initialize_config_dir``)."""

    command: CommandLine
    config_name: str
    searchpath: list[str]

    def _overrides(self, overrides: list[str]) -> list[str]:
        return [*overrides, f"hydra.searchpath=[{','.join(self.searchpath)}]"] if self.searchpath else overrides

    def options(self, group: str, groups: bool = False) -> list[str]:
        return GlobalHydra.instance().config_loader().get_group_options(
            group, results_filter=ObjectType.GROUP if groups else ObjectType.CONFIG, config_name=self.config_name,
            overrides=self._overrides([]))

    def keys(self, group: str, option: str) -> set[str]:
        """The keys option ``option`` of ``group`` sets, composed on its own."""
        try:
            node = OmegaConf.select(compose(self.config_name, self._overrides([f"{group}={option}"]),
                                            return_hydra_config=group.startswith("hydra/")), group.replace("/", "."))
        except Exception:  # noqa: BLE001 - an option that does not compose takes no key
            return set()
        return {str(k) for k in node.keys()} if OmegaConf.is_dict(node) else set()

    def choice(self, group: str, drop: str) -> str | None:
        """The option of ``group`` this command line picks (its override, a preset's, or the default)."""
        parser = OverridesParser.create()
        kept = [o for o in self.command.overrides if not o.startswith("hydra.searchpath=")]
        try:
            kept = [o.input_line for o in parser.parse_overrides(kept) if not o.is_sweep_override()
                    and o.key_or_group != drop and not o.key_or_group.startswith(drop + ".")]
            choices = compose(self.config_name, self._overrides(kept), return_hydra_config=True).hydra.runtime.choices
        except Exception:  # noqa: BLE001 - another bad override: the message goes without the choice
            return None
        return choices.get(group)


@contextmanager
def _composing(command: CommandLine, conf_dir: Path, config_name: str, cause: Exception) -> Iterator[_Context | None]:
    """A composition context with the command line's search path, or None where it cannot be rebuilt.

    ``--config-dir`` and ``hydra.searchpath`` (the command line's, else the primary config's,
    which the error's partly composed config holds) become one ``hydra.searchpath``; the
    primary config's directory is ``conf_dir`` or ``--config-path``.
    """
    primary = Path(command.config_path) if command.config_path else conf_dir
    if command.config_path and not primary.is_absolute():
        primary = Path(sys.argv[0]).resolve().parent / primary
    searchpath = [f"file://{os.path.abspath(command.config_dir)}"] if command.config_dir else []
    given = [OverridesParser.create().parse_override(o).value() for o in command.overrides
             if o.startswith("hydra.searchpath=")]
    if given:
        searchpath += [str(s) for s in given[-1] or []]
    elif cause.parent_node is not None:  # the primary config's, read from the node the key was looked for in
        up = "." * (cause.full_key.count(".") + 1)
        searchpath += [str(s) for s in (OmegaConf.select(cause.parent_node, f"{up}hydra.searchpath") or [])]
    if GlobalHydra.instance().is_initialized() or not primary.is_dir():
        yield None
        return
    with initialize_config_dir(config_dir=str(primary.resolve()), version_base="1.3"):
        yield _Context(command, command.config_name or config_name, searchpath)
