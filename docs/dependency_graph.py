"""The import graph of omni_lab's parts, read from the source (every import, those inside functions included).

    python docs/dependency_graph.py            # prints the edges and writes docs/dependency_graph.png
    python docs/dependency_graph.py --check    # exit 1 on a cycle between parts (tests/test_package.py runs it)

A part is a top-level module (`lab`, `forward`, ...) or subpackage (`capture`, `studies`, ...) of omni_lab, plus
`kernels` and `widgets` (installed as omni_lab.kernels / omni_lab.widgets). An edge A -> B means some file of A imports
something of B.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"omni_lab": ROOT / "omni_lab", "kernels": ROOT / "kernels" / "omni_lab_kernels",
           "widgets": ROOT / "widgets" / "omni_lab_widgets"}  # fmt: skip


def part_of(file: Path) -> str:
    """The part a source file belongs to."""
    for name, folder in SOURCES.items():
        if folder in file.parents or file.parent == folder:
            if name != "omni_lab":
                return name
            relative = file.relative_to(folder)
            return relative.parts[0].removesuffix(".py") if len(relative.parts) > 1 else relative.stem
    raise ValueError(file)


def package_of(file: Path) -> list[str]:
    """The dotted package a source file sits in, as installed (`kernels/omni_lab_kernels/x.py` is in
    omni_lab.kernels)."""
    for name, folder in SOURCES.items():
        if folder in file.parents or file.parent == folder:
            inner = list(file.relative_to(folder).parts[:-1])
            return ["omni_lab", *inner] if name == "omni_lab" else ["omni_lab", name, *inner]
    raise ValueError(file)


def imported_parts(file: Path) -> set[str]:
    """The omni_lab parts `file` imports (absolute and relative imports, at any depth of the file)."""
    tree = ast.parse(file.read_text(encoding="utf-8"))
    package = package_of(file)
    targets = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets += [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = node.module.split(".") if node.module else []
            if module or node.level == 0:
                targets.append([*base, *module])
            else:  # `from . import x`: each name is a module of the package
                targets += [[*base, alias.name] for alias in node.names]
            if [*base, *module] == ["omni_lab"]:  # `from omni_lab import kernels`
                targets += [["omni_lab", alias.name] for alias in node.names]
    own = part_of(file)
    return {target[1] for target in targets if len(target) > 1 and target[0] == "omni_lab" and target[1] != own}


def graph() -> dict[str, set[str]]:
    """{part: the parts it imports}."""
    edges: dict[str, set[str]] = {}
    for folder in SOURCES.values():
        for file in folder.rglob("*.py"):
            if "__pycache__" in file.parts:
                continue
            part = part_of(file)
            edges.setdefault(part, set()).update(imported_parts(file))
    known = set(edges)
    return {part: {target for target in targets if target in known} for part, targets in edges.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more parts (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def draw(edges: dict[str, set[str]], path: Path) -> None:
    """A layered picture: each part at the depth of its longest import chain (leaves at the bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth: dict[str, int] = {}

    def level(node, seen=()):
        if node in depth:
            return depth[node]
        below = [level(target, (*seen, node)) for target in edges[node] if target not in seen]
        depth[node] = 1 + max(below, default=-1)
        return depth[node]

    for node in edges:
        level(node)
    rows: dict[int, list[str]] = {}
    for node in sorted(edges, key=lambda n: (depth[n], n)):
        rows.setdefault(depth[node], []).append(node)
    position = {}
    for row, nodes in rows.items():
        for column, node in enumerate(nodes):
            position[node] = ((column + 0.5) / len(nodes), row)
    figure, axes = plt.subplots(figsize=(15, 1.3 * (len(rows) + 1)))
    for node, targets in edges.items():
        for target in targets:
            (x0, y0), (x1, y1) = position[node], position[target]
            axes.annotate("", (x1, y1 + 0.12), (x0, y0 - 0.12),
                          arrowprops={"arrowstyle": "->", "color": "#999999", "lw": 0.6, "alpha": 0.6})  # fmt: skip
    for node, (x, y) in position.items():
        axes.text(x, y, node, ha="center", va="center", fontsize=9,
                  bbox={"boxstyle": "round", "facecolor": "#e8f0fb", "edgecolor": "#4a78b0"})  # fmt: skip
    axes.set_ylim(-0.6, max(rows) + 0.6)
    axes.set_xlim(-0.02, 1.02)
    axes.axis("off")
    axes.set_title("omni_lab: which part imports which (arrows point at the imported part; leaves at the bottom)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str]) -> int:
    edges = graph()
    found = cycles(edges)
    if "--check" in argv:
        for group in found:
            print("import cycle between:", ", ".join(group))
        return 1 if found else 0
    for part in sorted(edges):
        print(f"{part:16s} -> {', '.join(sorted(edges[part])) or '-'}")
    print("cycles:", found or "none")
    draw(edges, ROOT / "docs" / "dependency_graph.png")
    print("wrote docs/dependency_graph.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
