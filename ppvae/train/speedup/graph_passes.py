"""Exact clean-up passes over a captured training-step graph (:mod:`ppvae.capture`).

A graph recorded by ``make_fx`` from Pyro code carries Python-level bookkeeping as operations:
plate index ranges, ``expand`` and ``broadcast_tensors`` to shapes tensors already have, fresh
copies of Python numbers, a standard normal prior's zeros and ones. :func:`simplify_graph`
removes what is a no-op and folds what does not depend on the graph's input values, using only
rewrites that give bitwise the same values (``x - 0``, ``x / 1``, ``sum(-x) = -sum(x)``).
Random and in-place operations are never removed or shared between calls.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, cast

import torch

__all__ = ["simplify_graph"]

_NO_OP_SHAPES = {torch.ops.aten.expand.default, torch.ops.aten.view.default,
                 torch.ops.aten.reshape.default, torch.ops.aten.alias.default}


def simplify_graph(gm: torch.fx.GraphModule, inputs: Sequence | None = None
                   ) -> torch.fx.GraphModule:
    """Drop dead nodes and no-ops from a captured graph; fold constants when given ``inputs``.

    The no-ops are ``expand``/``view``/``alias`` to the input's own shape and strides,
    ``broadcast_tensors`` of tensors that already share one shape, and ``detach_`` of a fresh
    constant copy (Pyro's ``broadcast_all`` makes those from Python numbers). With the
    capture's ``inputs``, also fold the parts that do not depend on input values (a standard
    normal prior's zeros and ones, their logarithms) into constants, and drop additions of zeros
    and multiplications by ones, which are exact identities.

    Random and in-place operations are kept even when their result is unused (torch marks them
    impure), so the graph consumes the random stream exactly as the eager step does.
    """
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in _NO_OP_SHAPES and _same_layout(node.args[0], node):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        elif node.target is torch.ops.aten.detach_.default and getattr(
                node.args[0], "target", None) is torch.ops.aten.lift_fresh_copy.default:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        elif node.target is torch.ops.aten.broadcast_tensors.default:
            ins = node.args[0]
            users = list(node.users)
            if all(u.target is operator.getitem for u in users) and all(
                    _same_layout(ins[u.args[1]], u) for u in users):
                for u in users:
                    u.replace_all_uses_with(ins[u.args[1]])
                    graph.erase_node(u)
                graph.erase_node(node)
    graph.eliminate_dead_code()
    if inputs is not None:
        values = _fold_constants(gm, inputs)
        _drop_identities(graph, values)
        graph.eliminate_dead_code()
    _negate_after_sum(graph)
    gm.recompile()
    return gm


def _negate_after_sum(graph: torch.fx.Graph) -> None:
    """``sum(-x)`` -> ``-sum(x)`` (a Bernoulli log density is ``-bce``).

    One scalar negation in place of one over every pixel, forward and backward. Exact: negation
    commutes with every rounded addition.
    """
    for node in list(graph.nodes):
        arg: Any = node.args[0] if node.op == "call_function" and node.args else None
        if node.target is not _aten.sum.default or len(node.args) != 1 or node.kwargs or \
                getattr(arg, "target", None) is not _aten.neg.default or len(arg.users) != 1:
            continue
        with graph.inserting_before(node):
            total = graph.call_function(_aten.sum.default, (arg.args[0],))
            neg = graph.call_function(_aten.neg.default, (total,))
        neg.meta = dict(node.meta)
        node.replace_all_uses_with(neg)
        graph.erase_node(node)
        graph.erase_node(arg)


_aten = torch.ops.aten
# read only the shape, dtype and device of their first argument (fixed by the signature when
# that argument is an input of the graph)
_LIKE_INPUT = {_aten.new_zeros.default, _aten.new_ones.default, _aten.new_full.default,
               _aten.zeros_like.default, _aten.ones_like.default, _aten.full_like.default}
# uninitialized memory is written in place afterwards: never shared between calls
_UNINITIALIZED = {_aten.empty.memory_format, _aten.new_empty.default, _aten.empty_like.default,
                  _aten.empty_strided.default}


def _fold_constants(gm: torch.fx.GraphModule, inputs: Sequence) -> dict[str, torch.Tensor]:
    """Evaluate once the nodes whose values do not depend on the graph's input values.

    Each one that feeds the rest of the graph becomes an attribute; returns those attributes.
    Not done when an in-place operation writes into anything derived from such a node (a shared
    constant must not change between calls).
    """
    graph = gm.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    real = dict(zip(placeholders, inputs, strict=True))
    const: set = set()
    for node in graph.nodes:
        if node.op == "get_attr":
            const.add(node)
        elif node.op == "call_function" and node.target not in _UNINITIALIZED and (
                isinstance(node.target, torch._ops.OpOverload) or
                node.target is operator.getitem) and not node.is_impure():
            deps = node.all_input_nodes
            if node.target in _LIKE_INPUT and node.args[0] in real:  # an input's metadata
                deps = [n for n in deps if n is not node.args[0]]
            if all(n in const for n in deps):
                const.add(node)
    if not const or any(_written_ancestors(node) & const for node in graph.nodes):
        return {}
    env: dict = {}
    with torch.no_grad():
        for node in graph.nodes:
            if node in const:
                if node.op == "get_attr":
                    env[node] = operator.attrgetter(node.target)(gm)
                else:
                    args, kwargs = torch.fx.node.map_arg(
                        (node.args, node.kwargs), lambda n: env[n] if n in env else real[n])
                    env[node] = node.target(*args, **kwargs)
    values: dict[str, torch.Tensor] = {}
    for node in list(graph.nodes):
        if node.op != "call_function" or node not in const or \
                not isinstance(env[node], torch.Tensor) or all(u in const for u in node.users):
            continue
        name = f"_ppvae_folded_{len(values)}"
        values[name] = env[node].detach().clone()
        gm.register_buffer(name, values[name])
        with graph.inserting_before(node):
            attr = graph.get_attr(name)
        attr.meta = dict(node.meta)
        node.replace_all_uses_with(attr)
    return values


def _written_ancestors(node) -> set:
    """The nodes that an in-place ``node`` writes into, and everything they derive from."""
    schema = getattr(node.target, "_schema", None)
    if node.op != "call_function" or schema is None or not schema.is_mutable:
        return set()
    todo = [a for a, arg in zip(node.args, schema.arguments, strict=False)
            if isinstance(a, torch.fx.Node) and arg.alias_info is not None and
            arg.alias_info.is_write]
    seen: set = set()
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(n.all_input_nodes)
    return seen


_IDENTITY = {_aten.add.Tensor: (0.0, (0, 1)), _aten.sub.Tensor: (0.0, (1,)),
             _aten.mul.Tensor: (1.0, (0, 1)), _aten.div.Tensor: (1.0, (1,))}


def _drop_identities(graph: torch.fx.Graph, values: dict[str, torch.Tensor]) -> None:
    """Replace ``x + 0``, ``x - 0``, ``x * 1``, ``x / 1`` by ``x``, which they equal exactly.

    Only for a folded constant of zeros (ones) that neither broadcasts ``x`` nor changes its
    dtype.
    """
    for node in list(graph.nodes):
        rule = _IDENTITY.get(node.target) if node.op == "call_function" else None
        if rule is None or len(node.args) != 2 or node.kwargs:
            continue
        unit, positions = rule
        for pos in positions:
            c, other = node.args[pos], node.args[1 - pos]
            # a get_attr node's target is its attribute name (torch types it Callable | str)
            value = values.get(cast(str, c.target)) if isinstance(c, torch.fx.Node) and \
                c.op == "get_attr" else None
            if value is not None and isinstance(other, torch.fx.Node) and \
                    _same_layout(other, node) and bool((value == unit).all()):
                node.replace_all_uses_with(other)
                graph.erase_node(node)
                break


def _same_layout(a, b) -> bool:
    """Do fx nodes ``a`` and ``b`` hold tensors of one shape and strides (from the capture)?"""
    va = getattr(a, "meta", {}).get("val")
    vb = getattr(b, "meta", {}).get("val")
    return isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor) and \
        va.shape == vb.shape and va.stride() == vb.stride()
