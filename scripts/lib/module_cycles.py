#!/usr/bin/env python3
"""Finds import circles between the top-level modules of a crate's `src/`.

A module is the first path segment under `src/` (`store/mysql.rs` belongs to `store`). An
edge a -> b is any `crate::b` path in a's code (a `use` or an inline path; comments and the
`#[cfg(test)] mod tests` unit tests are skipped), with the items `lib.rs` re-exports mapped to the module they come from. Prints
the edges and every circle; exits 1 when there is one.

`--ignore-reexports` leaves out `pub use crate::…;` lines: a re-export kept only so that old
paths still compile names the other module but runs none of its code.

    python3 scripts/lib/module_cycles.py [--ignore-reexports] [shared/src]
"""

import re
import sys
from pathlib import Path

# `crate::{a, b::c}` or `crate::a`; only the first segment after `crate::` matters.
CRATE_PATH = re.compile(r"\bcrate::(\{[^;]*?\}|[A-Za-z_][A-Za-z0-9_]*)", re.S)
FIRST_SEGMENTS = re.compile(r"(?:^|[{,])\s*([A-Za-z_][A-Za-z0-9_]*)")
REEXPORT = re.compile(r"^pub use (\w+)::\{?([\w\s,]+)\}?;", re.M)
CRATE_REEXPORT = re.compile(r"\bpub use crate::[^;]*;")


def code_of(path: Path) -> str:
    """The file's product code: comments left out, and its unit tests (a `#[cfg(test)]`
    module, by convention the file's last item), which may use any module without making the
    module itself depend on it."""
    text = path.read_text().split("#[cfg(test)]\nmod tests", 1)[0]
    lines = (line.split("//", 1)[0] for line in text.splitlines())
    return "\n".join(lines)


def first_segments(group: str) -> list[str]:
    """`{a::x, b::{y, z}}` -> [a, b]: segments at the top level of the braces only."""
    if not group.startswith("{"):
        return [group]
    depth, top = 0, []
    for ch in group[1:-1]:
        depth += ch == "{"
        depth -= ch == "}"
        top.append(ch if depth == 0 or ch in "{}" else " ")
    return FIRST_SEGMENTS.findall("{" + "".join(top))


def edges(src: Path, ignore_reexports: bool) -> dict[str, set[str]]:
    modules = {p.stem for p in src.glob("*.rs") if p.stem not in ("lib", "main")}
    modules |= {p.name for p in src.iterdir() if p.is_dir()}
    root_items = {}
    for module, items in REEXPORT.findall((src / "lib.rs").read_text()):
        for item in items.split(","):
            root_items[item.strip()] = module
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for path in src.rglob("*.rs"):
        module = path.relative_to(src).parts[0].removesuffix(".rs")
        if module not in modules:
            continue
        code = code_of(path)
        if ignore_reexports:
            code = CRATE_REEXPORT.sub("", code)
        for match in CRATE_PATH.finditer(code):
            for segment in first_segments(match.group(1)):
                target = segment if segment in modules else root_items.get(segment)
                if target and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each elementary circle once, starting at its smallest module name."""
    found = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == start:
                found.append(path + [start])
            elif nxt > start and nxt not in path:
                walk(start, nxt, path + [nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return found


def main() -> int:
    args = sys.argv[1:]
    ignore_reexports = "--ignore-reexports" in args
    paths = [a for a in args if not a.startswith("--")]
    graph = edges(Path(paths[0] if paths else "shared/src"), ignore_reexports)
    for module in sorted(graph):
        print(f"{module} -> {', '.join(sorted(graph[module])) or '-'}")
    circles = cycles(graph)
    for circle in circles:
        print("circle: " + " -> ".join(circle))
    print(f"{len(circles)} circle(s)")
    return 1 if circles else 0


if __name__ == "__main__":
    sys.exit(main())
