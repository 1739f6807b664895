"""The bad-input suite's checks: run the CLI in-process, snapshot directories, check the
refusal.

Every case asserts the same contract (docs/cli.md, "Failure behaviour"): the documented exit code
(2 for an error the user can fix), exactly one line on stderr that starts with the program's
name and ``error:`` and names the problem, no traceback, and the directories the command was
pointed at byte for byte as before (files, their contents, symlinks and their targets).
"""

import os
import re
from pathlib import Path

from ppvae.app import cli


def snapshot(root) -> dict | None:
    """Relative path -> ('file', bytes) / ('link', target) / ('dir',); None if absent."""
    root = Path(root)
    if not os.path.lexists(root):
        return None
    if root.is_file():
        return {".": ("file", root.read_bytes())}
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", p.read_bytes())
    return out


def run_cli(argv, capsys):
    """``ppvae <argv>`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code, err, expect=(), *, exit_code=2):
    """The refusal contract: exit code, one stderr line naming the problem, no traceback."""
    assert code == exit_code, f"exit {code}, stderr: {err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert re.match(r"^ppvae( [a-z]+)?: (error:|interrupted|training stopped)", lines[0]), \
        lines[0]
    for fragment in (expect,) if isinstance(expect, str) else expect:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def refused(argv, capsys, expect=(), *, watch=(), exit_code=2):
    """Run ``argv``; assert the refusal contract and that every path in ``watch`` is unchanged."""
    before = {str(p): snapshot(p) for p in watch}
    code, _, err = run_cli(argv, capsys)
    line = assert_refused(code, err, expect, exit_code=exit_code)
    for p in watch:
        assert snapshot(p) == before[str(p)], f"{p} changed"
    return line


