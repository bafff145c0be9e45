"""Names from untrusted files reach the terminal escaped; what hwmap writes is strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hwmap import Fidelity, KPIs
from hwmap.cli import main
from hwmap.jsonio import dumps
from hwmap.text import one_line, printable

pytestmark = pytest.mark.usefixtures("toy_registry")

EVIL = "imc\x1b]0;pwned\x07\x1b[2J\x9b31m"


def test_printable_and_one_line() -> None:
    assert printable(EVIL) == "imc\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m"
    assert printable("a\nb\tc") == "a\nb\tc" and one_line("a\nb\tc") == "a\\x0ab\\x09c"
    assert printable("µS – ok ✓") == "µS – ok ✓"


def test_escape_sequences_never_reach_the_terminal(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "evil.toml"
    cfg.write_text(f'extends = "toy_cpu:default"\nname = {json.dumps(EVIL)}\n'
                   f'description = {json.dumps(EVIL)}\n')
    for args in (["check", str(cfg)], ["check", str(cfg), "--show"],
                 ["compare", "zoo:chapter_cnn", str(cfg), "-q"], ["compare", "zoo:chapter_cnn", str(cfg), "--csv", "-q"],
                 ["compare", "zoo:chapter_cnn", str(cfg), "--markdown", "-q"],
                 ["compile", "zoo:chapter_cnn", "--target", str(cfg), "-o", str(tmp_path / "o"), "-q"]):
        assert main(args) == 0, args
        out, err = capsys.readouterr()
        for text in (out, err):
            assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text, (args, text[:300])
        assert "\\x1b" in out or "\\u001b" in out, args  # shown escaped (TOML and JSON strings: \\u001b)
    bad = tmp_path / f"bad{EVIL}.toml"
    bad.write_text("kind = 3\n")
    assert main(["check", str(bad)]) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and "\x1b" not in err and "bad" in err


def test_json_is_strict() -> None:
    k = KPIs(fidelity=Fidelity("max_abs_error", math.inf, 3, {"out.rel_max_error": math.nan}), latency_s=math.inf)
    text = dumps(k.to_json())
    d = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert d["latency_s"] is None and d["fidelity"]["value"] is None
    assert d["fidelity"]["detail"]["out.rel_max_error"] is None
