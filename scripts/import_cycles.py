"""Print the import cycles of the vbon_exp package: its strongly connected components of more than one module, from
the import graph import-linter builds (grimp). `make test` runs `lint-imports` (the layers contract); this script is
the complement for reading the graph: `python scripts/import_cycles.py` (exit 1 when a cycle exists)."""

from __future__ import annotations

import sys


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components in no particular order."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                out.append(sorted(component))
    return out


def main() -> int:
    import grimp

    g = grimp.build_graph("vbon_exp")
    graph = {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    print(f"{len(graph)} modules, {sum(len(v) for v in graph.values())} direct imports, {len(cycles)} import cycle(s)")
    for cycle in sorted(cycles, key=len, reverse=True):
        print(f"  cycle of {len(cycle)} modules: {', '.join(cycle)}")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
