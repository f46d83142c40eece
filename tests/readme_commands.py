"""Read the shell commands a user sees in README.md, and run them.

Commands come from fenced ``bash``/``sh``/``shell``/``console`` blocks, indented (4+ spaces)
code blocks, and inline code spans that start with one of the project's programs (``transunet
info`` in a sentence is a command too). ``\\`` continuations are joined, ``#`` comments
dropped, ``&&`` chains split into their commands, a ``$ `` prompt removed.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# TRANSUNET_README=<file> checks a proposed README against the same map without replacing it.
README = Path(os.environ.get("TRANSUNET_README", ROOT / "README.md"))

#: Programs whose inline code spans count as commands.
PROGRAMS = ("transunet", "segment", "python", "python3", "pip", "torchrun", "tensorboard")
_SHELL_FENCES = ("", "bash", "sh", "shell", "console")
_FENCE = re.compile(r"^\s*```\s*([\w+-]*)")
_INLINE = re.compile(r"`([^`\n]+)`")


@dataclass(frozen=True)
class Command:
    """One README command.

    Attributes:
        text: the command, tokens joined by single spaces (the key of the test's map).
        argv: its tokens (shell-split, comments dropped).
        line: 1-based README line where it starts.
        inline: True for a code span inside prose (may be a shorthand such as ``segment --report``).
    """

    text: str
    argv: tuple[str, ...]
    line: int
    inline: bool = False


def _split_chain(source: str, line: int, inline: bool) -> list[Command]:
    try:
        tokens = shlex.split(source, comments=True)
    except ValueError as exc:  # unbalanced quotes: the README itself is wrong
        raise AssertionError(f"README.md:{line}: cannot parse {source!r} ({exc})") from None
    commands, current = [], []
    for tok in tokens + ["&&"]:
        if tok in ("&&", ";"):
            if current:
                commands.append(Command(" ".join(current), tuple(current), line, inline))
            current = []
        else:
            current.append(tok)
    return commands


def _code_lines_to_commands(lines: list[tuple[int, str]], inline: bool = False) -> list[Command]:
    out, pending, start = [], "", 0
    for number, raw in lines:
        text = raw.strip()
        if text.startswith("$ "):
            text = text[2:]
        if not pending:
            start = number
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        pending += text
        if pending.strip() and not pending.strip().startswith("#"):
            out += _split_chain(pending, start, inline)
        pending = ""
    if pending.strip():
        out += _split_chain(pending, start, inline)
    return out


def parse_readme(text: str) -> tuple[list[Command], list[str]]:
    """All shell commands of a README, in order, and its Python code blocks.

    Returns:
        ``(commands, python_blocks)``; a python block is its text with the fence removed.
    """
    commands: list[Command] = []
    python_blocks: list[str] = []
    fence_lang = None  # inside a fence: its language
    fence_lines: list[tuple[int, str]] = []
    indented: list[tuple[int, str]] = []
    prose: list[tuple[int, str]] = []  # the current paragraph (a code span may cross lines)
    prev_blank = True

    def flush() -> None:
        nonlocal indented, prose
        commands.extend(_code_lines_to_commands(indented))
        if prose:
            paragraph = " ".join(t.strip() for _, t in prose)
            for span in _INLINE.findall(paragraph):
                words = span.split()
                if len(words) >= 2 and words[0] in PROGRAMS:
                    commands.extend(_split_chain(" ".join(words), prose[0][0], inline=True))
        indented, prose = [], []

    for number, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if fence_lang is not None:
            if m and not m.group(1):
                if fence_lang in _SHELL_FENCES:
                    commands += _code_lines_to_commands(fence_lines)
                elif fence_lang in ("python", "py"):
                    python_blocks.append("\n".join(t for _, t in fence_lines) + "\n")
                fence_lang, fence_lines = None, []
            else:
                fence_lines.append((number, line))
            continue
        if m:
            flush()
            fence_lang = m.group(1).lower()
            continue
        blank = not line.strip()
        is_code = not blank and line.startswith("    ") and (prev_blank or bool(indented))
        if blank or is_code or line.lstrip().startswith("|"):
            if prose:
                flush()
            if is_code:
                indented.append((number, line))
            elif not blank:  # a table row is a paragraph of its own
                prose.append((number, line))
                flush()
        else:
            if indented:
                flush()
            prose.append((number, line))
        prev_blank = blank
    flush()
    if fence_lang is not None:
        raise AssertionError("README.md: unclosed ``` fence")
    return commands, python_blocks


def readme_commands() -> tuple[list[Command], list[str]]:
    return parse_readme(README.read_text(encoding="utf-8"))


def substitute(command: str, replacements: tuple[tuple[str, str], ...] = (), extra: tuple[str, ...] = ()) -> list[str]:
    """The argv of a README command after documented substitutions (each must apply)."""
    for old, new in replacements:
        assert old in command, f"substitution {old!r} no longer applies to {command!r}"
        command = command.replace(old, new)
    return shlex.split(command) + list(extra)


def run_argv(argv: list[str], cwd: Path, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a command as a user would from ``cwd``. ``python`` is this interpreter; the console
    scripts ``transunet``/``segment`` run as ``python -m transunet_app`` / its ``segment``
    entry (the same functions pyproject's [project.scripts] names), so the test does not
    depend on where pip put the scripts."""
    prog, *rest = argv
    if prog in ("python", "python3"):
        full = [sys.executable, *rest]
    elif prog == "transunet":
        full = [sys.executable, "-m", "transunet_app", *rest]
    elif prog == "segment":
        full = [sys.executable, "-c", "import sys; from transunet_app.cli import segment_main; "
                "sys.exit(segment_main())", *rest]
    elif prog == "torchrun":
        full = [sys.executable, "-m", "torch.distributed.run", *rest]
    else:
        raise AssertionError(f"no runner for {prog!r}")
    return subprocess.run(full, cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=timeout)
