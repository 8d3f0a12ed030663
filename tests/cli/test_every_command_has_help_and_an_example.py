"""Every command has help text with an ``Example:`` (a test fails when one has
not): all commands of ``federation``, and each group's own check of what its
help must show.
"""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from federation.cli.main import cli


def all_commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, prefix + (name,))


def test_every_command_has_help_and_an_example():
    missing = [" ".join(p) for p, c in all_commands(cli) if not c.help or "Example:" not in c.help]
    assert not missing, f"commands without help text and an Example: {missing}"


def test_every_distribution_command_has_help_with_an_example():
    for args in (["node"], ["node", "check"], ["node", "status"], ["token"], ["token", "issue"], ["token", "list"],
                 ["token", "revoke"], ["audit"], ["export"], ["post-batch"], ["serve"]):
        out = CliRunner().invoke(cli, args + ["--help"]).output
        assert "Example:" in out, args


async def test_every_trust_command_has_help_with_an_example():
    from click.testing import CliRunner
    from federation.cli.main import cli
    for group in ("trust", "cosign", "witness"):
        cmd = cli.commands[group]
        assert "Example:" in (cmd.help or "")
        for sub in cmd.commands.values():
            assert "Example:" in (sub.help or ""), f"{group} {sub.name} has no example"
    r = CliRunner().invoke(cli, ["verify", "--help"])
    assert "--against" in r.output


@pytest.mark.timeout(60)
def test_every_platform_command_has_help_with_example():
    def walk(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, path + [name])
    for name in ("platform", "doctor"):
        for path, cmd in walk(cli.commands[name], [name]):
            assert cmd.help and "Example:" in cmd.help, " ".join(path)
            r = CliRunner().invoke(cli, path + ["--help"])
            assert r.exit_code == 0 and "Example:" in r.output, " ".join(path)
