"""`luna-plugins completion bash|zsh|fish`: a shell completion script for the CLI.

The script is written from the CLI's own parser, so it knows every sub-command, their options
and the values of options with fixed choices (``--log-format``, ...); anything else completes
as a file name. Install it with, e.g.::

    luna-plugins completion bash > ~/.local/share/bash-completion/completions/luna-plugins
    luna-plugins completion zsh > "${fpath[1]}/_luna-plugins"
    luna-plugins completion fish > ~/.config/fish/completions/luna-plugins.fish
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field

SHELLS = ("bash", "zsh", "fish")
PROGRAM = "luna-plugins"


@dataclass(frozen=True)
class Command:
    """What completes after one sub-command: its options, the words it takes (nested commands,
    positional choices) and the choices of options that have them."""

    name: str
    help: str
    options: tuple[str, ...]
    words: tuple[str, ...] = ()
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=SHELLS, help="the shell to complete in")


def run(args: argparse.Namespace) -> int:
    from luna_cli.main import build_parser

    sys.stdout.write(script(args.shell, build_parser()))
    return 0


def commands(parser: argparse.ArgumentParser) -> list[Command]:
    """The sub-commands of ``parser`` as :class:`Command` (in the parser's order)."""
    found = []
    for action in parser._actions:  # argparse has no public walk of its parsers
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found.append(_command(name, helps.get(name, ""), sub))
    return found


def _command(name: str, help_text: str, parser: argparse.ArgumentParser) -> Command:
    options: list[str] = []
    words: list[str] = []
    choices: dict[str, tuple[str, ...]] = {}
    for action in parser._actions:
        if action.option_strings:
            options += action.option_strings
            if action.choices is not None and action.nargs != 0:
                for option in action.option_strings:
                    choices[option] = tuple(str(choice) for choice in action.choices)
        elif action.choices is not None:
            words += [str(choice) for choice in action.choices]
    return Command(name, help_text, tuple(options), tuple(words), choices)


def top_options(parser: argparse.ArgumentParser) -> tuple[str, ...]:
    """The options of the program itself (``--help``, ``--version``)."""
    return tuple(option for action in parser._actions for option in action.option_strings)


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script for ``shell`` (one of :data:`SHELLS`); ``ValueError`` otherwise."""
    if shell == "bash":
        return bash_script(parser)
    if shell == "zsh":
        return zsh_script(parser)
    if shell == "fish":
        return fish_script(parser)
    raise ValueError(f"shell {shell!r}: expected one of {', '.join(SHELLS)}")


def _words(items: tuple[str, ...] | list[str]) -> str:
    return shlex.quote(" ".join(items))


def bash_script(parser: argparse.ArgumentParser) -> str:
    """A bash script defining ``_luna_plugins`` and binding it to the program."""
    found = commands(parser)
    cases = []
    for command in found:
        for option, values in command.choices.items():
            cases.append(f"        {shlex.quote(command.name + ' ' + option)}) words={_words(values)} ;;")
    lines = [
        f"# bash completion for {PROGRAM} (written by `{PROGRAM} completion bash`)",
        "_luna_plugins() {",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    local command="${COMP_WORDS[1]}" words=""',
        "    COMPREPLY=()",
        "    if [[ $COMP_CWORD -eq 1 ]]; then",
        f"        words={_words([c.name for c in found] + list(top_options(parser)))}",
        "    else",
        '        case "$command $prev" in',
        *cases,
        "        *)",
        '            case "$command" in',
        *(
            f"            {shlex.quote(c.name)}) words={_words(list(c.words) + list(c.options))} ;;"
            for c in found
        ),
        "            esac",
        '            if [[ "$cur" != -* ]]; then',
        '                COMPREPLY=($(compgen -f -- "$cur"))',
        "            fi",
        "            ;;",
        "        esac",
        "    fi",
        '    COMPREPLY+=($(compgen -W "$words" -- "$cur"))',
        "}",
        f"complete -o filenames -F _luna_plugins {PROGRAM}",
        "",
    ]
    return "\n".join(lines)


def zsh_script(parser: argparse.ArgumentParser) -> str:
    """A zsh script: the bash function through zsh's ``bashcompinit``, for ``source`` or for a
    file ``_luna-plugins`` in ``$fpath``."""
    return "\n".join(
        [
            f"#compdef {PROGRAM}",
            f"# zsh completion for {PROGRAM} (written by `{PROGRAM} completion zsh`)",
            "autoload -U +X bashcompinit && bashcompinit",
            bash_script(parser).rstrip("\n"),
            # from $fpath, compinit runs this file as the completion function at the first Tab:
            # `complete` above only binds the later ones, so this one completes here
            "if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then",
            "    _bash_complete -o filenames -F _luna_plugins",
            "fi",
            "",
        ]
    )


def fish_script(parser: argparse.ArgumentParser) -> str:
    """A fish script of ``complete`` lines, one per sub-command, option and choice."""
    found = commands(parser)
    names = " ".join(c.name for c in found)
    lines = [f"# fish completion for {PROGRAM} (written by `{PROGRAM} completion fish`)"]
    lines.append(f"complete -c {PROGRAM} -n 'not __fish_seen_subcommand_from {names}' -l version -l help")
    for command in found:
        lines.append(
            f"complete -c {PROGRAM} -f -n 'not __fish_seen_subcommand_from {names}' "
            f"-a {shlex.quote(command.name)} -d {shlex.quote(command.help)}"
        )
        seen = f"-n '__fish_seen_subcommand_from {command.name}'"
        if command.words:
            lines.append(f"complete -c {PROGRAM} {seen} -a {_words(command.words)}")
        for option in command.options:
            flag = f"-l {option[2:]}" if option.startswith("--") else f"-s {option[1:]}"
            values = command.choices.get(option)
            extra = f" -x -a {_words(values)}" if values else ""
            lines.append(f"complete -c {PROGRAM} {seen} {flag}{extra}")
    return "\n".join(lines) + "\n"
