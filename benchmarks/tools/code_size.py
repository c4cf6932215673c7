"""Lines per module and the longest functions, for the package, the stage scripts and the dashboard.

Run it on any checkout to compare layouts, before and after a regrouping:

    .venv/bin/python -m benchmarks.tools.code_size            # this checkout
    .venv/bin/python -m benchmarks.tools.code_size ../other   # another checkout or worktree
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

from benchmarks import ROOT

FOLDERS = ("src/patchunet", "pipelines", "dashboard")


def function_lengths(path: Path) -> list[tuple[int, str]]:
    """(lines, qualified name) of every function and method defined in the file."""
    lengths = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lengths.append((child.end_lineno - child.lineno + 1, name))
                visit(child, f"{name}.")

    visit(ast.parse(path.read_text()), "")
    return lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", type=Path, default=ROOT)
    parser.add_argument("--top", type=int, default=10, help="how many of the longest functions to list")
    args = parser.parse_args()
    modules = sorted(p for folder in FOLDERS for p in (args.root / folder).rglob("*.py"))
    sizes = [(len(p.read_text().splitlines()), p.relative_to(args.root).as_posix()) for p in modules]
    functions = [
        (n, f"{p.relative_to(args.root).as_posix()}:{name}") for p in modules for n, name in function_lengths(p)
    ]
    for folder in FOLDERS:
        inside = [n for n, name in sizes if name.startswith(folder + "/")]
        print(f"{folder}: {len(inside)} modules, {sum(inside)} lines, largest {max(inside, default=0)}")
    print("\nlargest modules:")
    for n, name in sorted(sizes, reverse=True)[: args.top]:
        print(f"  {n:5d}  {name}")
    print("\nlongest functions:")
    for n, name in sorted(functions, reverse=True)[: args.top]:
        print(f"  {n:5d}  {name}")


if __name__ == "__main__":
    main()
