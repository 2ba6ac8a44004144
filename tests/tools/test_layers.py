"""Layering of tools/, access/ and cli/, read from the source with `ast`.

tools/ and access/ sit under the kernel: they import nothing from kernel/,
agent/, server/ or cli/, not even for type checking. The cli modules share
their plumbing through `cli/common.py`: none imports `cli/main.py` (only the
launcher, `cli/launch.py`, which hands it every command line it does not run
itself) or another module's private (underscore) name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import llmos

SRC = Path(llmos.__file__).parent
ABOVE = ("llmos.kernel", "llmos.agent", "llmos.server", "llmos.cli")


def imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) for every import in the file, wherever it is (functions, TYPE_CHECKING)."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, a.name) for a in node.names]
    return found


def test_tools_and_access_import_nothing_above_them() -> None:
    bad = [
        f"{path.relative_to(SRC)}: {module}"
        for package in ("tools", "access")
        for path in sorted((SRC / package).glob("*.py"))
        for module, _ in imports(path)
        if module.startswith(ABOVE)
    ]
    assert bad == []


def test_cli_modules_share_public_helpers_only() -> None:
    bad = [
        f"{path.name}: {module}.{name}"
        for path in sorted((SRC / "cli").glob("*.py"))
        if path.name != "main.py"
        for module, name in imports(path)
        if (module == "llmos.cli.main" and path.name != "launch.py")
        or (module.startswith("llmos.") and name and name.startswith("_") and name[1] != "_")
    ]
    assert bad == []
