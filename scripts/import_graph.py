"""The import graph of src/alexnet, read from the source (ast, imports inside functions
included): every edge between its stages, each module-level cycle, and each edge that
goes from a lower stage to a higher one. Exit status 1 when there is either.

    python scripts/import_graph.py          # the stage edges, then the verdict
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src" / "alexnet"

# The stages, lowest first: a module may import its own stage and the ones before it.
STAGES = (
    "options",  # every enumerated choice (alexnet/options.py); the version (alexnet/__init__.py)
    "runtime",  # device, distributed, files, errors, seeds
    "data",  # images -> store, the store, the loader, augmentation
    "model",  # the net of §3
    "kernels",  # the fast drop-ins for the net's modules, and the plan that picks them
    "weights",  # trained nets as files: checkpoint format, run directory, loading
    "evaluation",  # the tally, a split's errors and features
    "results",  # the verbs on trained nets, the figures, the report
    "microscope",  # every unit of a net as a static site (results' scan, feature visualisation)
    "train",  # training
    "studies",  # the ablation studies (train and results)
    "bench",  # benchmarks
    "top",  # cli.py, __main__.py
)


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    graph = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("alexnet"):
                target = node.module
            else:
                continue
            for t in (target, *(f"{target}.{a.name}" for a in node.names)):
                if t in mods and t != mod:
                    graph[mod].add(t)
    return graph


def stage(mod: str) -> str:
    parts = mod.split(".")
    if len(parts) == 1:  # the package: its version, and names it imports lazily by string
        return "options"
    return "top" if parts[1] in ("cli", "__main__") else parts[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def main() -> int:
    graph = imports(modules())
    rank = {s: i for i, s in enumerate(STAGES)}
    edges: dict[tuple[str, str], list[str]] = {}
    for a, targets in graph.items():
        for b in targets:
            if stage(a) != stage(b):
                edges.setdefault((stage(a), stage(b)), []).append(f"{a} -> {b}")
    upward = [(k, v) for k, v in edges.items() if rank[k[0]] < rank[k[1]]]
    for (a, b), examples in sorted(edges.items(), key=lambda e: (rank[e[0][0]], rank[e[0][1]])):
        print(f"{a:>10} -> {b:<10} {len(examples):3} import(s)")
    found = cycles(graph)
    for c in found:
        print("cycle:", " -> ".join(c))
    for (a, b), examples in upward:
        print(f"upward: {a} -> {b}: {examples[0]}")
    print(f"{len(found)} cycle(s), {len(upward)} upward edge(s)")
    return 1 if found or upward else 0


if __name__ == "__main__":
    sys.exit(main())
