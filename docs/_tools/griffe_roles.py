"""Griffe extension: Sphinx roles in ppvae's docstrings become links in the API reference.

ppvae's docstrings name other objects with Sphinx roles (``:func:`check_pair```,
``:class:`~ppvae.core.bounds.Bound```, ``:mod:`.process```). Markdown has no such roles, so
mkdocstrings would print them as they are. Once a package is loaded, this extension rewrites each
role as an optional cross-reference: the name is looked up the way Python would see it from the
docstring's object (its class, its module, the module's package, then ``ppvae``), aliases are
followed to where the object is documented, and the reference links there if that object is
rendered on some page, or stays inline code if it is not (optional references never fail the
strict build). A role whose name resolves nowhere is inline code too; ``unresolved`` collects
them for ``tests/test_docs_pages.py``. reST's ``text::`` before a literal block becomes
``text:`` (the indented block stays a code block in Markdown).
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):`(?P<tilde>~?)(?P<target>[^`<>]+)`")
LITERAL = re.compile(r"(\S)\s*::(?=\n\s*\n)")

unresolved: list[tuple[str, str]] = []  # (object path, role target) found nowhere


def _lookup(collection: Any, path: str) -> Any:
    try:
        return collection[path]
    except (KeyError, ValueError, AttributeError, griffe.AliasResolutionError,
            griffe.CyclicAliasError):
        return None


def _canonical(obj: Any) -> str:
    if obj.is_alias:
        try:
            return obj.final_target.path
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return obj.target_path
    return obj.path


def _scopes(obj: Any) -> list[str]:
    module = obj if obj.is_module else obj.module
    scopes = []
    if obj.is_class:
        scopes.append(obj.path)
    if obj.parent is not None and obj.parent.is_class:
        scopes.append(obj.parent.path)
    scopes.append(module.path)
    if "." in module.path:
        scopes.append(module.path.rsplit(".", 1)[0])
    scopes += ["ppvae", ""]
    return scopes


def _resolve(target: str, obj: Any, collection: Any) -> str | None:
    target = re.sub(r"\s+", "", target).removesuffix("()")
    if target.startswith("."):
        module = obj if obj.is_module else obj.module
        base = module.path if module.is_init_module else module.path.rsplit(".", 1)[0]
        dots = len(target) - len(target.lstrip("."))
        for _ in range(dots - 1):
            base = base.rsplit(".", 1)[0]
        found = _lookup(collection, f"{base}.{target.lstrip('.')}")
        return _canonical(found) if found is not None else None
    for scope in _scopes(obj):
        found = _lookup(collection, f"{scope}.{target}" if scope else target)
        if found is not None:
            return _canonical(found)
    if target.startswith("ppvae."):  # a name from before a module moved into a subpackage
        matches = [p for p in _paths(collection) if p.endswith(target.removeprefix("ppvae"))]
        if len(matches) == 1:
            return matches[0]
    return None


def _paths(collection: Any) -> list[str]:
    """The paths of every object defined (not imported) in the ppvae package."""
    if not hasattr(collection, "_ppvae_paths"):
        paths, stack = [], [collection["ppvae"]]
        while stack:
            obj = stack.pop()
            paths.append(obj.path)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
        collection._ppvae_paths = paths
    return collection._ppvae_paths


def convert(text: str, obj: Any, collection: Any) -> str:
    """``text`` (a docstring of ``obj``) with its roles as optional cross-references."""

    def link(match: re.Match[str]) -> str:
        target = re.sub(r"\s+", "", match["target"])
        shown = target.rsplit(".", 1)[-1] if match["tilde"] else target.lstrip(".")
        code = f"<code>{html.escape(shown)}</code>"
        identifier = _resolve(target, obj, collection)
        if identifier is None:
            unresolved.append((obj.path, target))
            return code
        return f'<autoref identifier="{html.escape(identifier)}" optional>{code}</autoref>'

    return LITERAL.sub(r"\1:", ROLE.sub(link, text))


class SphinxRoles(griffe.Extension):
    """Rewrite the Sphinx roles of every docstring in a loaded package (see the module)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader,
                   **kwargs: Any) -> None:
        """Convert the docstrings of ``pkg`` and everything defined in it."""
        collection = loader.modules_collection
        stack: list[Any] = [pkg]
        while stack:
            obj = stack.pop()
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value, obj, collection)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
