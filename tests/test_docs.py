"""The docs stay true to the code: links lead somewhere, the commands they show exist with the
flags they are given, and the generated options tables are those the code generates now."""

import importlib.util
import re
from functools import cache
from pathlib import Path

import pytest
import typer.main

from accel_signs.cli import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
IDS = [str(p.relative_to(ROOT)) for p in PAGES]
FENCE = re.compile(r"^(```|~~~)[^\n]*\n.*?^\1\s*$", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# `accel-signs CMD`, `.venv/bin/accel-signs CMD`, `python -m accel_signs CMD`, `accelerate launch ... -m accel_signs CMD`
INVOCATION = re.compile(r"(?:^|(?<=[\s/]))(?:accel-signs|-m accel_signs)\s+(.*)")
GLOBAL = {"-v", "--verbose", "-q", "--quiet"}
ENDS = {"#", "|", "||", "&&", ";", ">", ">>", "2>&1"}


def code_blocks(text: str) -> list[str]:
    return [m.group(0) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        if m := re.match(r"#{1,6}\s+(.*)", line):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    bad = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, hf:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_relative_links_lead_to_files_and_headings(page):
    bad = broken_links(page)
    assert not bad, f"{page.relative_to(ROOT)}: " + "; ".join(bad)


def invocations(block: str) -> list[tuple[str, list[str]]]:
    """(command, flags) for every accel-signs invocation in a code block. Flags come after the
    command (those before `-m accel_signs` are accelerate's); a line that continues with
    indented `[--option ...]` or ends in a backslash carries on."""
    lines = block.splitlines()
    out = []
    for i, line in enumerate(lines):
        m = INVOCATION.search(line)
        if not m:
            continue
        rest = m.group(1)
        j = i
        while j + 1 < len(lines) and (rest.rstrip().endswith("\\") or re.match(r"\s+\[", lines[j + 1])):
            j += 1
            rest = rest.rstrip().rstrip("\\") + " " + lines[j]
        tokens = []
        for token in rest.split():
            if token in ENDS or token.startswith("#"):
                break
            tokens.append(token)
        while tokens and tokens[0] in GLOBAL:
            tokens.pop(0)
        if tokens:
            flags = [f.group(1) for t in tokens[1:] if (f := re.match(r"\[?(--[A-Za-z][\w-]*)", t))]
            out.append((tokens[0], flags))
    return out


@cache
def command_flags() -> dict[str, set[str]]:
    """Every registered command, with the long flags it takes (negative forms included)."""
    commands = typer.main.get_command(app).commands
    flags = {}
    for name, command in commands.items():
        opts = {"--help"}
        for p in command.params:
            opts.update(o for o in [*p.opts, *getattr(p, "secondary_opts", [])] if o.startswith("--"))
        flags[name] = opts
    return flags


def shown_commands(text: str) -> list[tuple[str, list[str]]]:
    """Invocations in code blocks and in inline code (`accel-signs COMMAND` placeholders left out)."""
    spans = re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    found = [i for block in [*code_blocks(text), *spans] for i in invocations(block)]
    return [(c, f) for c, f in found if not c.isupper()]


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_commands_in_code_exist_with_their_flags(page):
    known = command_flags()
    bad = []
    for command, flags in shown_commands(page.read_text(encoding="utf-8")):
        if command not in known:
            bad.append(f"accel-signs {command}: no such command")
            continue
        bad += [f"accel-signs {command} {f}: no such option" for f in flags if f not in known[command]]
    assert not bad, f"{page.relative_to(ROOT)}: " + "; ".join(bad)


def test_the_docs_show_commands():
    """The checks above read something: the README's tour names most commands."""
    shown = {c for c, _ in shown_commands((ROOT / "README.md").read_text(encoding="utf-8"))}
    assert {"train", "evaluate", "predict", "export", "serve"} <= shown


def test_the_parser_reads_invocations():
    block = (
        "```bash\n"
        "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m accel_signs train --num-epochs 2\n"
        ".venv/bin/accel-signs -v evaluate runs/x/best [--data STORE]   # --not-a-flag\n"
        "accel-signs prepare a b --from npz\n"
        "                    [--signs 1-100] [--dtype float16]\n"
        "pip install 'accel-signs[hub]' && accel-signs train --no-eval | tee log\n"
        "```"
    )
    assert invocations(block) == [
        ("train", ["--num-epochs"]),
        ("evaluate", ["--data"]),
        ("prepare", ["--from", "--signs", "--dtype"]),
        ("train", ["--no-eval"]),
    ]


def test_slugs_are_githubs():
    assert slug("Hardware set-up: from `accelerate config` to several machines") == (
        "hardware-set-up-from-accelerate-config-to-several-machines"
    )
    assert slug("## `accel-signs train`".lstrip("# ")) == "accel-signs-train"


REPO_PATH = re.compile(r"(?<![\w/.])(?:accel_signs|benchmarks|examples|tests|docs|accelerate_configs|\.ci)/[\w./*-]*")


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_repository_paths_named_in_the_docs_exist(page):
    """A file named in code (`accel_signs/model/features.py`, `examples/quickstart.sh`) is there:
    module paths in the docs follow the package when it moves."""
    text = page.read_text(encoding="utf-8")
    named = {m.rstrip(".") for span in re.findall(r"`([^`\n]+)`", FENCE.sub("", text)) for m in REPO_PATH.findall(span)}
    named |= {m.rstrip(".") for block in code_blocks(text) for m in REPO_PATH.findall(block)}
    missing = sorted(n for n in named if not any(ROOT.glob(n.rstrip("/"))))
    assert not missing, f"{page.relative_to(ROOT)} names missing files: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_python_examples_import_what_exists(page):
    """`from accel_signs... import name` in the docs' Python blocks names a module and a name that exist."""
    bad = []
    for block in code_blocks(page.read_text(encoding="utf-8")):
        for module, names in re.findall(r"^from (accel_signs[\w.]*) import ([\w, ]+)$", block, re.M):
            try:
                imported = importlib.import_module(module)
            except ImportError as e:
                bad.append(f"{module}: {e}")
                continue
            bad += [f"{module}.{n}" for n in (n.strip() for n in names.split(",")) if not hasattr(imported, n)]
    assert not bad, f"{page.relative_to(ROOT)}: no " + ", ".join(bad)


def test_generated_options_are_up_to_date():
    spec = importlib.util.spec_from_file_location("docs_options", ROOT / "docs" / "options.py")
    options = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(options)
    stale = options.stale()
    assert not stale, f"stale: {stale}; run `python docs/options.py`"
