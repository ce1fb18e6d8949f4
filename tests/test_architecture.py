"""The shape of the package, checked: floors that import downward only, no import cycles, no
private names taken across modules, lorakit imports at the top of library modules, and every
option name the code reads defined in the option table."""

import ast
import importlib
import pkgutil
from dataclasses import fields
from pathlib import Path

import pytest

import lorakit

SRC = Path(lorakit.__file__).parent

# Highest first. A package may import its own floor and the floors below it, never above.
FLOORS = [
    {"cli"},
    {"web"},
    {"quickstart"},
    {"training"},
    {"evaluation", "tools"},
    {"networks"},
    {"data", "models", "runs"},
    {"utils", "errors", ""},  # "" is the top-level lorakit/__init__.py
]
LEVEL = {name: i for i, floor in enumerate(FLOORS) for name in floor}


def modules() -> dict[str, Path]:
    out = {"lorakit": SRC / "__init__.py"}
    for info in pkgutil.walk_packages([str(SRC)], prefix="lorakit."):
        path = SRC.joinpath(*info.name.split(".")[1:])
        out[info.name] = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
    return out


MODULES = modules()


def package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def part(module: str) -> str:
    """The top-level part of lorakit a module belongs to ("" for lorakit itself)."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else ""


def imports(module: str) -> list[tuple[str, list[str], bool]]:
    """(imported lorakit module, names, at the top of the module) for each import statement."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package_of(module).split(".")
            base = base[: len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lorakit"):
            target = node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lorakit"):
                    out.append((alias.name, [], id(node) in top))
            continue
        else:
            continue
        names = [a.name for a in node.names]
        submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
        plain = [n for n in names if f"{target}.{n}" not in MODULES]
        for sub in submodules:
            out.append((sub, [], id(node) in top))
        if plain or not submodules:
            out.append((target, plain, id(node) in top))
    return out


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_imports():
    for name in MODULES:
        importlib.import_module(name)


def test_every_part_has_a_floor():
    assert {part(m) for m in MODULES} <= set(LEVEL), "add the new part of lorakit to FLOORS"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_floors(module):
    for target, _, _ in GRAPH[module]:
        assert LEVEL[part(target)] >= LEVEL[part(module)], (
            f"{module} imports {target}: '{part(target)}' is above '{part(module)}'. Move the shared "
            "code down to the lower part, or call it from the higher one (docs/architecture.md)."
        )


def test_no_import_cycles():
    edges = {m: {t for t, _, _ in GRAPH[m] if t != m} for m in MODULES}
    # a package's __init__ importing its own modules is how packages work; the cycles that
    # matter are between modules, so an import of a package stands for the modules it names
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for m in sorted(MODULES):
        if m not in index:
            visit(m)
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_names_across_modules():
    for module, found in GRAPH.items():
        for target, names, _ in found:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{module} takes private {private} from {target}; make them public there"


def test_lorakit_imports_are_at_the_top_outside_the_command_line():
    for module, found in GRAPH.items():
        if part(module) == "cli":
            continue  # commands import lazily so that `lorakit --help` starts fast
        lazy = [target for target, _, top in found if not top]
        assert not lazy, f"{module} imports {lazy} inside a function; import at the top of the module"


def test_every_option_the_code_reads_is_in_the_option_table():
    from lorakit.training.config import TrainConfig
    from lorakit.training.options import BY_NAME, ConfigOptions

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for module in MODULES:
        if part(module) in ("training", "quickstart", "cli", "web"):
            importlib.import_module(module)
    option_objects = list(subclasses(ConfigOptions))
    assert len(option_objects) >= 7
    for cls in option_objects:
        unknown = [f.name for f in fields(cls) if f.name not in BY_NAME]
        assert not unknown, f"{cls.__name__} reads {unknown}, which are not options"
    own = {name for name in dir(TrainConfig)} | {f.name for f in fields(TrainConfig)}
    for module, path in MODULES.items():
        if part(module) not in ("training", "quickstart", "cli", "web"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "config":
                name = node.attr
                assert name in BY_NAME or name in own, f"{module} reads config.{name}, which is not an option"
