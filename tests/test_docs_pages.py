"""The documentation site keeps its promises: every ```python block of a docs/ page runs, in order,
in one fresh namespace per page (a block preceded by ``<!-- not tested: reason -->`` is skipped,
and the reason is required); every module of the package has an API reference entry and every
public top-level name its row in docs/api/index.md; every page is in the navigation; and the
strict MkDocs build passes with no Sphinx role left unrendered."""

import re
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_tools" not in p.parts)
FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```$", flags=re.S | re.M)
SKIP = re.compile(r"<!--\s*not tested:\s*(?P<reason>.*?)\s*-->\s*\n$")


def python_blocks(page):
    """(first code line, code, skip reason or None) of each ```python block of ``page``."""
    text = page.read_text()
    found = []
    for m in FENCE.finditer(text):
        if m["lang"] != "python":
            continue
        skip = SKIP.search(text[:m.start()])
        if skip is not None and not skip["reason"]:
            raise AssertionError(f"{page}: '<!-- not tested: -->' needs a reason")
        found.append((text[:m.start("body")].count("\n") + 1, m["body"],
                      skip["reason"] if skip else None))
    return found


PAGES_WITH_CODE = [p for p in PAGES if python_blocks(p)]


@pytest.mark.parametrize("page", PAGES_WITH_CODE,
                         ids=[str(p.relative_to(DOCS)) for p in PAGES_WITH_CODE])
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may write files (checkpoints, figures)
    namespace = {"__name__": "docs_page"}
    try:
        for line, code, skip in python_blocks(page):
            if skip is None:  # padded so that a traceback names the page's own line numbers
                exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)
    finally:
        plt.close("all")


def _documented_modules():
    api = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.md"))
    return set(re.findall(r"^::: (ppvae[\w.]*)\s*$", api, flags=re.M))


def _package_modules():
    names = set()
    for folder, prefix in ((ROOT / "ppvae", ["ppvae"]), (ROOT / "models", ["ppvae", "models"]),
                           (ROOT / "guides", ["ppvae", "guides"])):
        for path in folder.rglob("*.py"):
            parts = [*prefix, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts != ["ppvae"] and not any(p.startswith("_") for p in parts):
                names.add(".".join(parts))
    return names


def test_every_module_has_an_api_reference_entry():
    missing = sorted(_package_modules() - _documented_modules())
    assert not missing, ("modules without a '::: module' entry in docs/api/<subpackage>.md: "
                         f"{missing}")
    stale = sorted(_documented_modules() - _package_modules())
    assert not stale, f"docs/api/ documents modules that do not exist: {stale}"


def test_every_public_name_has_a_row_in_the_api_overview():
    import ppvae

    overview = (DOCS / "api" / "index.md").read_text()
    listed = set(re.findall(r"\[`ppvae\.(\w+)`\]\[", overview))
    public = set(ppvae.__all__) - {"__version__", "data", "distributed"}
    assert not public - listed, f"ppvae names missing from docs/api/index.md: {public - listed}"
    assert not listed - public, f"docs/api/index.md lists names ppvae lacks: {listed - public}"


def test_every_page_is_in_the_navigation():
    nav = set(re.findall(r":\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.M))
    pages = {str(p.relative_to(DOCS)) for p in PAGES}
    assert pages == nav, f"pages not in mkdocs.yml's nav: {pages - nav}; missing: {nav - pages}"


def test_strict_build_renders_the_api_reference(tmp_path):
    pytest.importorskip("mkdocstrings_handlers.python")
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d",
                        str(site)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    html = (site / "api" / "core" / "index.html").read_text()
    assert 'id="ppvae.core.bounds.iwae"' in html  # a function's entry, rendered from griffe
    leftovers = [str(p.relative_to(site)) for p in site.rglob("*.html")
                 if re.search(r":(func|class|mod|meth|attr|data|exc|obj):`", p.read_text())]
    assert not leftovers, f"Sphinx roles left unrendered in {leftovers}"
    # the roles became links where their target is documented
    assert html.count('class="autorefs autorefs-internal"') > 50
