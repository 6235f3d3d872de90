"""Old ``sovctl`` spellings that keep working for one release, hidden and announced.

When a sub-app or command is renamed (``tenant`` to ``tenants``, ``dataset register`` to
``datasets create``), ``deprecated_alias`` registers the old name once more: hidden from
``--help`` and built from the very same sub-app or callback, so its options, stdout and
exit code are those of the new spelling. The one difference is a line on stderr naming the
new spelling and the release that removes the old one, so scripts keep running while their
authors are told what to change.

The notice names the renamed path once: ``sovctl workload submit`` renames two words and
prints the single line ``'workload submit' is deprecated, use 'workloads create'``. So a
renamed group does not announce itself on entry; it waits to see whether the command it
resolves is renamed too, and the last renamed word of the path prints the line.
"""

import copy
from typing import ClassVar

import typer

# typer ships its own copy of click; TyperGroup's and TyperCommand's methods take its Context.
from typer._click import Command, Context
from typer.core import TyperCommand, TyperGroup

#: The release that removes the deprecated spellings.
REMOVED_IN = "0.3"


class _Alias:
    """A hidden command or group under an old name, standing in for ``replacement``."""

    replacement: ClassVar[str]


def _notice(ctx: Context) -> str:
    """The deprecation line for the command path up to ``ctx``, renamed words replaced."""
    old: list[str] = []
    new: list[str] = []
    level: Context | None = ctx
    while level is not None and level.parent is not None:  # the root is sovctl itself
        word = level.info_name or ""
        old.insert(0, word)
        new.insert(0, level.command.replacement if isinstance(level.command, _Alias) else word)
        level = level.parent
    return (
        f"sovctl: '{' '.join(old)}' is deprecated, use '{' '.join(new)}' (removed in {REMOVED_IN})"
    )


def _announce(ctx: Context) -> None:
    typer.echo(_notice(ctx), err=True)


class _AliasGroup(_Alias, TyperGroup):
    """A renamed sub-app: announces itself unless the command it runs is renamed too."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        """Parse as the group does; if that ends the run (``--help``, no args), announce."""
        try:
            return super().parse_args(ctx, args)
        except Exception:
            _announce(ctx)
            raise

    def resolve_command(
        self, ctx: Context, args: list[str]
    ) -> tuple[str | None, Command | None, list[str]]:
        """Find the subcommand; announce now unless a renamed subcommand will."""
        try:
            name, command, rest = super().resolve_command(ctx, args)
        except Exception:  # no such command: the usage error follows the notice
            _announce(ctx)
            raise
        if not isinstance(command, _Alias):
            _announce(ctx)
        return name, command, rest


class _AliasCommand(_Alias, TyperCommand):
    """A renamed command: announces the renamed path, then parses and runs as the new one."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        """Announce before parsing, so even a usage error or ``--help`` is told."""
        _announce(ctx)
        return super().parse_args(ctx, args)


def _alias_group(new: str) -> type[TyperGroup]:
    """The click class of a renamed sub-app; typer builds it, so it carries ``new`` itself."""

    class AliasGroup(_AliasGroup):
        replacement = new

    return AliasGroup


def _alias_command(new: str) -> type[TyperCommand]:
    """The click class of a renamed command, carrying the name that replaces it."""

    class AliasCommand(_AliasCommand):
        replacement = new

    return AliasCommand


def deprecated_alias(parent: typer.Typer, old: str, new: str) -> None:
    """Make ``old`` a hidden, announced spelling of ``parent``'s sub-app or command ``new``.

    ``new`` must already be registered on ``parent`` under that explicit name. The alias is
    a copy of its registration, so it runs the same code with the same options.
    """
    for group in parent.registered_groups:
        if group.name == new:
            alias = copy.copy(group)
            alias.name, alias.hidden, alias.cls = old, True, _alias_group(new)
            parent.registered_groups.append(alias)
            return
    for command in parent.registered_commands:
        if command.name == new:
            alias_command = copy.copy(command)
            alias_command.name, alias_command.hidden = old, True
            alias_command.cls = _alias_command(new)
            parent.registered_commands.append(alias_command)
            return
    raise ValueError(f"no sub-app or command named {new!r} to alias as {old!r}")
