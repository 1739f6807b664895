"""The README is a front page that keeps its promises: under 150 lines, a table of contents whose
links resolve, a Quick start of exactly the two commands ``make demo`` and ``make test``, links
to documentation pages that exist, and examples that run as written (the Python blocks in this
process, the shell block's ``ppvae`` commands as subprocesses)."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TEXT = README.read_text()
FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```$", flags=re.S | re.M)


def blocks(lang):
    """(first line number of the code, code) of each fenced block in language ``lang``."""
    return [(TEXT[:m.start("body")].count("\n") + 1, m["body"]) for m in FENCE.finditer(TEXT)
            if m["lang"] == lang]


def section(title):
    """The README's text under ``## title``, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", TEXT, flags=re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match[1]


def github_slug(heading):
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


PYTHON = blocks("python")


def test_readme_is_a_front_page():
    assert len(TEXT.splitlines()) < 150, "README.md must stay under 150 lines (docs/ has room)"
    # the table of contents comes before the first section and names every section
    first_section = TEXT.index("\n## ")
    contents = re.findall(r"\]\(#([^)]+)\)", TEXT[:first_section])
    headings = [github_slug(h) for h in re.findall(r"^## (.+)$", TEXT, flags=re.M)]
    assert contents == headings, "the Contents line must link every '## ' section, in order"


def test_quick_start_is_exactly_make_demo_and_make_test():
    text = section("Quick start")
    fenced = FENCE.findall(text)
    assert len(fenced) == 1, "Quick start must have exactly one code block"
    commands = [line.split("#")[0].strip() for line in fenced[0][1].splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]


def test_install_section_shows_pip_and_every_extra():
    text = section("Install into your own environment")
    assert "pip install /path/to/ppvae" in text and "pip install -e ." in text
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for extra in extras:
        assert f"`{extra}`" in text, f"the install section does not mention the extra {extra!r}"


def test_links_to_the_documentation_resolve():
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", TEXT)
    assert len(links) >= 10
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, f"README links to missing files: {missing}"


@pytest.mark.parametrize(("line", "code"), PYTHON, ids=[f"line{n}" for n, _ in PYTHON])
def test_readme_python_block_runs(line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files (checkpoints, figures)
    # padded so that a traceback names the README's own line numbers
    exec(compile("\n" * (line - 1) + code, str(README), "exec"), {"__name__": "readme"})


def test_readme_command_line_example_runs(tmp_path):
    (shell,) = blocks("bash")
    commands = [shlex.split(line, comments=True) for line in shell[1].splitlines()]
    commands = [c for c in commands if c]
    assert commands and all(c[0] == "ppvae" for c in commands)
    for command in commands:
        r = subprocess.run([sys.executable, "-m", "ppvae", *command[1:]], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{shlex.join(command)}\n{r.stderr[-3000:]}"
    run = tmp_path / "runs" / "vae"
    for name in ("checkpoint.pt", "report.md", "reconstructions.png", "gaps.png", "samples.png"):
        assert (run / name).is_file(), f"the README's commands did not write {name}"
