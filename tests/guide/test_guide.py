"""docs/writing-a-target.md cannot drift from the code it teaches.

Every fenced code block of the guide is one of: an excerpt (captioned ``From [`PATH`](LINK):``),
whose runs of lines between elision lines (``...`` or ``# ...``) must appear, line for
line and in order, in that repository file; a file the reader saves (captioned ``Save as
`NAME`:``); shell commands; or the package tree, whose every entry must exist. Every
``hwmap`` command line parses with hwmap's own parser and, run in the guide's order against
the example target installed from its wheel, exits as the guide says (0, or the code a
``# exit code N`` comment names). Every relative link and anchor resolves.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fake_dist import TOY_CPU_EXAMPLE

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "writing-a-target.md"

FENCE = re.compile(r"^```(\S*)\s*$")
FROM = re.compile(r"^From \[`(?P<path>[^`]+)`\]\((?P<link>[^)]+)\):$")
SAVE = re.compile(r"(?:^|\s)Save as `(?P<name>[^`]+)`:$")
EXIT = re.compile(r"#\s*exit code (\d+)")
ELISIONS = ("...", "# ...")
#: Languages of the blocks that must be excerpts or saved files (the code a reader copies).
CODE_LANGUAGES = ("python", "toml")


@dataclass
class Block:
    lang: str
    text: str
    line: int  # of the opening fence, 1-based
    caption: str  # the last non-blank line before the fence


def blocks(markdown: str) -> list[Block]:
    """The fenced code blocks of ``markdown``, in order."""
    out: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        assert end is not None, f"{GUIDE.name}:{i + 1}: code block never closed"
        caption = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        out.append(Block(m.group(1), "\n".join(lines[i + 1:end]), i + 1, caption))
        i = end + 1
    return out


def excerpt_problem(excerpt: str, source: str) -> str | None:
    """``None`` when every run of lines of ``excerpt`` between elision lines appears, line for
    line (trailing blanks aside), in ``source``, each after the one before; else what is not."""
    src = [line.rstrip() for line in source.splitlines()]
    runs: list[list[str]] = [[]]
    for line in excerpt.splitlines():
        if line.strip() in ELISIONS:
            runs.append([])
        else:
            runs[-1].append(line.rstrip())
    runs = [r for r in (_trim(r) for r in runs) if r]
    if not runs:
        return "the excerpt is empty"
    pos = 0
    for run in runs:
        at = next((i for i in range(pos, len(src) - len(run) + 1) if src[i:i + len(run)] == run), None)
        if at is None:
            # the longest stretch of the run the file holds names the first line that differs
            same = max((_common(src[i:], run) for i in range(pos, len(src))), default=0)
            where = f" after line {pos}" if pos else ""
            if same == 0:
                return f"{len(run)} line(s) starting {run[0]!r} are not in the file{where}"
            return f"{len(run)} line(s) starting {run[0]!r}: line {same + 1}, {run[same]!r}, is not in the file{where}"
        pos = at + len(run)
    return None


def _common(a: list[str], b: list[str]) -> int:
    """How many leading lines ``a`` and ``b`` share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _trim(run: list[str]) -> list[str]:
    while run and not run[0]:
        run = run[1:]
    while run and not run[-1]:
        run = run[:-1]
    return run


def guide_blocks() -> list[Block]:
    return blocks(GUIDE.read_text())


def excerpts() -> list[tuple[Block, str]]:
    return [(b, m["path"]) for b in guide_blocks() if (m := FROM.match(b.caption))]


def saved_files() -> dict[str, str]:
    return {m["name"]: b.text + "\n" for b in guide_blocks() if (m := SAVE.search(b.caption))}


def command_lines() -> list[str]:
    """Every command of the guide's shell blocks, in order, comments kept."""
    return [line.strip() for b in guide_blocks() if b.lang == "sh" for line in b.text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def hwmap_commands() -> list[str]:
    """The distinct ``hwmap`` command lines, in the order the guide gives them."""
    seen: dict[str, None] = {}
    for line in command_lines():
        if line.startswith("hwmap "):
            seen.setdefault(line, None)
    return list(seen)


# -- the checker itself ----------------------------------------------------------------------------
SOURCE = "def f(x):\n    y = x + 1\n\n    return y\n\n\ndef g():\n    pass\n"


@pytest.mark.parametrize("excerpt", [
    "def f(x):\n    y = x + 1",
    "    y = x + 1\n\n    return y",
    "def f(x):\n    ...\n    return y\n# ...\ndef g():",
    "\ndef g():\n    pass\n\n",
])
def test_an_excerpt_found_in_its_file_passes(excerpt: str) -> None:
    assert excerpt_problem(excerpt, SOURCE) is None


@pytest.mark.parametrize("excerpt, needle", [
    ("def f(x):\n    y = x + 2", "line 2, '    y = x + 2', is not in the file"),  # a changed line
    ("def f(x):\n    return y", "starting 'def f(x):'"),  # a line dropped without an elision mark
    ("def g():\n# ...\ndef f(x):", "starting 'def f(x):' are not in the file after line 7"),  # out of order
    ("y = x + 1", "starting 'y = x + 1'"),  # indentation counts
    ("...\n", "the excerpt is empty"),
])
def test_an_excerpt_that_drifted_is_reported(excerpt: str, needle: str) -> None:
    problem = excerpt_problem(excerpt, SOURCE)
    assert problem is not None and needle in problem, problem


def test_blocks_are_found_with_their_captions() -> None:
    text = "intro\n\nFrom [`a.py`](../a.py):\n\n```python\nx = 1\n```\n\nSave as `b.toml`:\n```toml\nk = 1\n```\n"
    assert [(b.lang, b.text, b.line, b.caption) for b in blocks(text)] == [
        ("python", "x = 1", 5, "From [`a.py`](../a.py):"), ("toml", "k = 1", 10, "Save as `b.toml`:")]


# -- the guide ---------------------------------------------------------------------------------------
def test_every_code_block_is_an_excerpt_a_saved_file_commands_or_the_tree() -> None:
    for b in guide_blocks():
        if b.lang in CODE_LANGUAGES:
            assert FROM.match(b.caption) or SAVE.search(b.caption), (
                f"{GUIDE.name}:{b.line}: a {b.lang} block neither quotes a file (From [`PATH`](LINK):) nor is "
                f"saved by the reader (Save as `NAME`:)")
        else:
            assert b.lang in ("sh", ""), f"{GUIDE.name}:{b.line}: unexpected block language {b.lang!r}"


def test_every_excerpt_appears_in_the_file_it_names() -> None:
    found = excerpts()
    assert len(found) >= 15
    problems = []
    for block, path in found:
        m = FROM.match(block.caption)
        assert m is not None
        assert (GUIDE.parent / m["link"]).resolve() == (REPO / path).resolve(), (
            f"{GUIDE.name}:{block.line}: the link {m['link']} is not {path}")
        file = REPO / path
        if not file.is_file():
            problems.append(f"{GUIDE.name}:{block.line}: {path} does not exist")
            continue
        problem = excerpt_problem(block.text, file.read_text())
        if problem:
            problems.append(f"{GUIDE.name}:{block.line}: excerpt of {path}: {problem}")
    assert not problems, "\n".join(problems)


def test_the_guide_quotes_every_file_of_the_example() -> None:
    quoted = {path for _, path in excerpts()}
    example = "examples/toy_cpu/"
    for rel in ("pyproject.toml", "hwmap_toy_cpu/hardware.py", "hwmap_toy_cpu/plugin.py",
                "hwmap_toy_cpu/presets/default.toml", "hwmap_toy_cpu/presets/small.toml", "tests/test_conforms.py"):
        assert example + rel in quoted, f"the guide quotes nothing of {example + rel}"


def test_every_hook_is_quoted() -> None:
    plugin = "examples/toy_cpu/hwmap_toy_cpu/plugin.py"
    quoted = "\n".join(b.text for b, path in excerpts() if path == plugin)
    for hook in ("hwmap_register_targets", "hwmap_legalize", "hwmap_map", "hwmap_emit", "hwmap_simulate"):
        assert f"def {hook}(" in quoted, hook
    assert "energy_breakdown=breakdown" in quoted and "assumptions = dict(target.constants())" in quoted


def _tree_paths(tree: str) -> list[str]:
    """The paths of a ``tree``-style listing (4 characters per level), comments dropped."""
    lines = tree.splitlines()
    stack = [lines[0].strip().rstrip("/")]
    out = []
    for line in lines[1:]:
        m = re.match(r"^((?:│   |    )*)[├└]── (\S+)", line)
        assert m, line
        depth = len(m.group(1)) // 4 + 1
        stack = stack[:depth] + [m.group(2).rstrip("/")]
        out.append("/".join(stack))
    return out


def test_the_package_tree_is_the_example_folder() -> None:
    (tree,) = [b for b in guide_blocks() if b.lang == "" and b.text.startswith("examples/toy_cpu/")]
    listed = _tree_paths(tree.text)
    for rel in listed:
        assert (REPO / rel).exists(), f"{GUIDE.name}:{tree.line}: the tree lists {rel}, which does not exist"
    files = {str(p.relative_to(REPO)) for p in TOY_CPU_EXAMPLE.rglob("*") if p.is_file()
             and not any(part in ("build", "__pycache__") or part.endswith(".egg-info") for part in p.parts)
             and p.name != ".gitignore"}
    assert files <= set(listed), f"not in the guide's tree: {sorted(files - set(listed))}"


def test_every_relative_link_and_anchor_resolves() -> None:
    text = GUIDE.read_text()
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        if link.startswith("#"):
            assert link[1:] in anchors, f"anchor {link} is no heading of the guide"
        else:
            assert (GUIDE.parent / link).exists(), f"link {link} does not resolve"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_other_command_names_something_that_exists() -> None:
    others = [line for line in command_lines() if not line.startswith("hwmap ")]
    assert others == ["pip install -e examples/toy_cpu"]
    assert (REPO / "examples/toy_cpu/pyproject.toml").is_file()


def test_every_hwmap_command_parses() -> None:
    from hwmap.cli_parser import build_parser, parse

    commands = hwmap_commands()
    assert len(commands) >= 8
    parser = build_parser()
    for line in commands:
        try:
            parse(parser, shlex.split(line, comments=True)[1:])
        except SystemExit:
            pytest.fail(f"{GUIDE.name}: {line!r} does not parse")


#: Runs ``hwmap.cli.main`` on each command line given (a JSON list) in one process, as
#: ``hwmap`` would (plugins load once instead of once per command); writes each one's exit
#: code, stdout and stderr as JSON to the file named second.
RUN_COMMANDS = """
import contextlib, io, json, shlex, sys
from hwmap.cli import main

results = []
for line in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(shlex.split(line, comments=True)[1:])
        except SystemExit as e:
            code = e.code
    results.append({"line": line, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
with open(sys.argv[2], "w") as f:
    json.dump(results, f)
"""


def test_the_commands_run_as_the_guide_says(installed_env: dict[str, str], tmp_path: Path) -> None:
    """The guide's commands, in its order, against the example installed from its wheel, in
    one working directory holding the files the guide has the reader save."""
    for name, text in saved_files().items():
        (tmp_path / name).write_text(text)
    assert "my-cpu.toml" in saved_files()
    report = tmp_path / "commands.json"
    p = subprocess.run([sys.executable, "-c", RUN_COMMANDS, json.dumps(hwmap_commands()), str(report)],
                       env=installed_env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    outputs = {}
    for r in json.loads(report.read_text()):
        expected = int(m.group(1)) if (m := EXIT.search(r["line"])) else 0
        assert r["code"] == expected, (r["line"], r["code"], r["stdout"][-2000:], r["stderr"][-2000:])
        outputs[r["line"]] = r
    assert list(outputs) == hwmap_commands()
    # what the guide says about them
    targets = outputs["hwmap targets"]["stdout"]
    assert "toy_cpu" in targets and "hwmap-toy-cpu" in targets and "default, small" in targets
    small = outputs["hwmap check toy_cpu:small --show"]["stdout"]
    assert "mac_pj = 0.23" in small and "Horowitz, ISSCC 2014, 45 nm" in small  # inherited from default
    mine = outputs["hwmap check my-cpu.toml --show"]["stdout"]
    assert "macs_per_cycle = 16" in mine and "assumed: a 128-bit SIMD datapath" in mine
    (refused,) = [p for line, p in outputs.items() if EXIT.search(line)]
    assert "weight_memory" in refused["stderr"]
    kpis = json.loads((tmp_path / "digits" / "kpis.json").read_text())
    sens = kpis["sensitivity"]
    # latency scales with the assumed clock and MAC lanes; the energy, whose constants are cited, does not move
    assert sorted(sens) == ["hardware.clock_hz", "hardware.macs_per_cycle", "hardware.sram_bytes"]
    assert sens["hardware.clock_hz"]["x0.5"]["latency_s"] == pytest.approx(2.0)
    assert sens["hardware.macs_per_cycle"]["x2"]["latency_s"] < 1.0
    assert all(sens[k][f]["energy_per_inference_j"] == pytest.approx(1.0) for k in sens for f in ("x0.5", "x2"))
