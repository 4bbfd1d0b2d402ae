"""The package layout's rules, checked on the source: who may import whom.

- `converters` never imports `tflight`.
- A stage (`tflight.STAGES`, in pipeline order) imports only the core modules,
  `converters`, itself and the stages before it.
- The core imports no stage; `tflight/cli/<verb>.py` imports only the CLI's own
  helpers, the core, `converters` and the stage its verb belongs to (with the
  stages that stage builds on).
- No module in `tflight/` or `converters/` is longer than the house limit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tflight

ROOT = Path(__file__).resolve().parents[1]
CORE = {"tflight._keras", "tflight.errors", "tflight._io", "tflight.datasets", "tflight._lazy",
        "tflight._files"}
# The stage each command belongs to (None: the command needs no stage).
CLI_STAGE = {
    "convert": None,
    "compress": "tflight.compress",
    "distill": "tflight.distillation",
    "shrink": "tflight.shrink",
    "quantize": "tflight.precision",
    "bench": "tflight.bench",
}
MAX_LINES = 650


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function-level imports included)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            if base != "tflight":
                found.add(base)
            # `from tflight import compress` imports the stage `tflight.compress`;
            # `from tflight import prune` counts as `tflight.prune` (not a stage).
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _tflight_modules(imported: set[str]) -> set[str]:
    """The tflight modules among `imported`, each reduced to a stage or a core module."""
    out = set()
    for name in imported:
        if name == "tflight" or not name.startswith("tflight."):
            continue
        stage = next((s for s in tflight.STAGES if name == s or name.startswith(s + ".")), None)
        if stage is not None:
            out.add(stage)
        elif ".".join(name.split(".")[:2]) in {*CORE, "tflight.cli"}:
            out.add(".".join(name.split(".")[:2]))
        elif name.count(".") == 1:
            out.add(name)  # a top-level module, or a public name of `tflight` itself
    return out


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_converters_never_imports_tflight():
    for path in _files("converters"):
        bad = {m for m in _imports(path) if m == "tflight" or m.startswith("tflight.")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("stage", tflight.STAGES)
def test_a_stage_imports_only_the_core_and_earlier_stages(stage):
    earlier = set(tflight.STAGES[: tflight.STAGES.index(stage) + 1])
    folder = ROOT / Path(*stage.split("."))
    assert folder.is_dir(), folder
    for path in sorted(folder.rglob("*.py")):
        used = _tflight_modules(_imports(path))
        bad = used - CORE - earlier
        assert not bad, f"{path.relative_to(ROOT)} ({stage}) imports {sorted(bad)}"
        assert "tflight" not in _imports(path), f"{path.relative_to(ROOT)} imports tflight itself"


def test_the_core_imports_no_stage():
    for name in sorted(CORE):
        path = ROOT / (name.replace(".", "/") + ".py")
        if path.exists():
            used = _tflight_modules(_imports(path)) - CORE
            assert not used, f"{path.relative_to(ROOT)} imports {sorted(used)}"


@pytest.mark.parametrize("verb", sorted(CLI_STAGE))
def test_a_command_imports_only_its_stage(verb):
    path = ROOT / "tflight" / "cli" / f"{verb}.py"
    stage = CLI_STAGE[verb]
    stages = set(tflight.STAGES[: tflight.STAGES.index(stage) + 1]) if stage else set()
    allowed = CORE | {"tflight.cli"} | stages
    used = _tflight_modules(_imports(path))
    assert not used - allowed, f"tflight/cli/{verb}.py imports {sorted(used - allowed)}"
    assert "tflight" not in _imports(path), f"tflight/cli/{verb}.py imports tflight itself"


def test_every_command_module_is_classified():
    verbs = {p.stem for p in (ROOT / "tflight" / "cli").glob("*.py") if not p.stem.startswith("_")}
    verbs.discard("__init__")
    unclassified = verbs - set(CLI_STAGE) - {"demo", "optimize", "convert_lm", "generate"}
    assert not unclassified, f"add these commands to CLI_STAGE: {sorted(unclassified)}"


def test_no_module_past_the_house_limit():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _files("tflight") + _files("converters")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules (one idea each): {long}"


def _is_error_text(node: ast.AST) -> bool:
    """`str(e)` (or `e.args[...]`) for an exception bound as e / exc / err / error."""
    names = {"e", "exc", "err", "error"}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "str":
        return bool(node.args) and isinstance(node.args[0], ast.Name) and node.args[0].id in names
    return (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "args"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id in names
    )


_PARSING = {"split", "rsplit", "partition", "rpartition", "startswith", "endswith", "replace",
            "find", "index", "count", "removeprefix", "removesuffix"}


def test_the_cli_holds_no_error_text_matching():
    # The CLI maps library errors through their fields (e.option, e.layer, e.fix),
    # never by reading their message text: printing `str(e)` is fine, parsing it is not.
    for path in _files("tflight/cli"):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            parsed = (
                isinstance(node, ast.Attribute)
                and node.attr in _PARSING
                and _is_error_text(node.value)  # str(e).split(...)
            ) or (
                isinstance(node, ast.Compare)
                and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
                and any(_is_error_text(c) for c in node.comparators)  # "x" in str(e)
            )
            assert not parsed, (
                f"{path.relative_to(ROOT)}:{node.lineno} parses error text: "
                f"{ast.get_source_segment(source, node)}"
            )
