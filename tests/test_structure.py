"""The shape of the code: imports point one way, heavy libraries load only when needed, rooms stay small."""

import ast
import json
import os
import subprocess
import sys

import pytest

from conftest import HF_TOKEN, ROOT, STUDIO_KEY

PACKAGE = ROOT / "labeler"

# Lower layers never import higher ones; modules of one layer do not import each other.
LAYERS = {
    "core": 0,
    "audio": 1, "labels": 1, "timeline": 1,
    "records": 2, "models": 2,
    "classifiers": 3, "studio": 3, "folder": 3, "review": 3,
    "pipeline": 4,
}
MAX_MODULE_LINES = 550


def package_modules():
    return sorted(PACKAGE.rglob("*.py"))


def room_of(path) -> str:
    """The layer a file belongs to: its top-level module or subpackage inside labeler/."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "core" if parts == ("__init__",) else parts[0]


def runtime_imports(path) -> list[tuple[str, int]]:
    """(room imported, line) for every labeler import outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                 and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    depth = len(path.relative_to(PACKAGE).parts) - 1
    found = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's folder inside labeler/
                base = list(path.relative_to(PACKAGE).parent.parts)[: max(0, depth - (node.level - 1))]
                target = base + (node.module.split(".") if node.module else [])
                names = target if target else [alias.name for alias in node.names]
                found += [(names[0], node.lineno)] if target else [(n, node.lineno) for n in names]
            elif node.module and node.module.split(".")[0] in ("labeler", "transform"):
                parts = node.module.split(".")
                found.append((parts[1] if len(parts) > 1 else parts[0], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in ("labeler", "transform"):
                    found.append((parts[1] if len(parts) > 1 else parts[0], node.lineno))
    return found


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    room = room_of(path)
    for imported, line in runtime_imports(path):
        assert imported != "transform", f"{path.name}:{line} imports transform (the composition root)"
        if imported == room:
            continue  # a subpackage's own modules (classifiers/__init__ loads its backends)
        assert LAYERS[imported] < LAYERS[room], f"{path.name}:{line}: {room} may not import {imported}"


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_says_its_concern_and_what_it_may_import(path):
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert docstring, f"{path.name} has no docstring"
    if path.name != "__init__.py" or path.parent != PACKAGE:
        assert "May import" in docstring, f"{path.name}: say what the module may import"


@pytest.mark.parametrize("path", package_modules() + [ROOT / "transform.py"], ids=lambda p: p.name)
def test_modules_stay_small(path):
    limit = 350 if path.name == "transform.py" else MAX_MODULE_LINES
    assert len(path.read_text().splitlines()) <= limit


def test_the_layer_table_names_every_room():
    assert {room_of(p) for p in package_modules()} == set(LAYERS)


# --- heavy imports stay lazy -----------------------------------------------------------------------------

# Runs main() in a fresh interpreter, then reports which heavy libraries it imported.
PROBE = """
import json, sys
sys.path.insert(0, {root!r})
import transform
try:
    code = transform.main(json.loads(sys.argv[1]))
except SystemExit as exc:  # --help
    code = exc.code
heavy = sorted(m for m in ("torch", "transformers", "matplotlib") if m in sys.modules)
print("PROBE", json.dumps({{"code": code, "heavy": heavy}}))
"""


def probe(argv, env=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("EI_", "HF_"))}
    environ.update({"HF_HUB_OFFLINE": "1", **(env or {})})
    proc = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT)), json.dumps(argv)], env=environ,
                          capture_output=True, text=True, timeout=120)
    line = [x for x in proc.stdout.splitlines() if x.startswith("PROBE ")]
    assert line, proc.stdout + proc.stderr
    return json.loads(line[0][6:])


def test_help_imports_no_heavy_library():
    result = probe(["--help"])
    assert result == {"code": 0, "heavy": []}


def test_remote_backend_run_imports_neither_torch_nor_transformers(project, hf, tmp_path):
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps(sorted(project.state.samples)))
    result = probe(["--data-ids-file", str(ids), "--audioset-labels", "Speech\\nMusic", "--backend", "remote",
                    "--inference-url", hf.url],
                   {"EI_PROJECT_API_KEY": STUDIO_KEY, "EI_API_ENDPOINT": project.endpoint, "HF_TOKEN": HF_TOKEN,
                    "HF_ENDPOINT": hf.hub})
    assert result["code"] == 0
    assert "torch" not in result["heavy"] and "transformers" not in result["heavy"]
    assert all(s.structured_labels for s in project.state.samples.values())  # it really labeled


# --- serve/: a separate deployable on top of labeler --------------------------------------------

SERVE = ROOT / "serve"
# Pure modules of the server: testable and importable without Ray (or torch).
SERVE_PURE = ("protocol.py", "batching.py", "options.py")


def imported_top_levels(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    return names


@pytest.mark.parametrize("path", package_modules() + [ROOT / "transform.py"], ids=lambda p: p.name)
def test_the_block_never_imports_the_server(path):
    assert "serve" not in imported_top_levels(path)


@pytest.mark.parametrize("name", SERVE_PURE)
def test_the_servers_pure_modules_import_neither_ray_nor_torch(name):
    assert not imported_top_levels(SERVE / name) & {"ray", "torch", "transformers", "starlette"}


@pytest.mark.parametrize("path", sorted(SERVE.glob("*.py")), ids=lambda p: p.name)
def test_server_modules_stay_small_and_say_what_they_may_import(path):
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES
    if path.name != "__init__.py":
        assert "May import" in ast.get_docstring(ast.parse(path.read_text()))
