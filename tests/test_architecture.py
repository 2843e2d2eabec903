"""The file tree is the architecture: imports point down, and the public API is deliberate."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import flexroute

ROOT = Path(flexroute.__file__).parent
README = ROOT.parent / "README.md"
CI = ROOT.parent / ".ci" / "run"


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def module_name(path: Path) -> str:
    parts = ["flexroute", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """flexroute modules ``path`` imports at run time (not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for child in branch.body
        for node in ast.walk(child)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            # ``from package import submodule`` imports the submodule, not a circle.
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if submodule in MODULES else node.module)
    return {name for name in names if name.startswith("flexroute.")}


MODULES = {module_name(path) for path in sorted(ROOT.rglob("*.py"))}


def closure(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module reachable from ``start`` by imports."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        for target in graph.get(name, set()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def modules(under: str = "") -> list[Path]:
    return sorted((ROOT / under).rglob("*.py"))


def uses(path: Path, *prefixes: str) -> set[str]:
    return {
        name
        for name in imports(path)
        if name.split(".")[0] in prefixes
        or any(name == p or name.startswith(p + ".") for p in prefixes)
    }


class TestLayers:
    def test_only_the_proxy_and_emulator_import_web_frameworks(self) -> None:
        """Starlette and uvicorn stay at the edges; the engine knows no framework."""
        allowed = ("proxy/", "emulator/", "testing.py", "cli.py")
        for path in modules():
            relative = path.relative_to(ROOT).as_posix()
            if not relative.startswith(allowed):
                assert not uses(path, "starlette", "uvicorn"), relative

    def test_vendor_sdks_are_imported_only_by_the_wrapper_and_the_demo(self) -> None:
        """Vendor SDKs are wrapped clients and test clients, never the engine's plumbing."""
        for path in modules():
            relative = path.relative_to(ROOT).as_posix()
            if relative not in ("sdk.py", "demo.py"):
                assert not uses(path, "openai", "anthropic", "google"), relative

    def test_only_otel_imports_opentelemetry(self) -> None:
        """Traces are an extra: nothing else needs OpenTelemetry installed to import."""
        for path in modules():
            relative = path.relative_to(ROOT).as_posix()
            if relative != "otel.py":
                assert not uses(path, "opentelemetry"), relative

    def test_routing_and_dialects_never_import_the_proxy(self) -> None:
        """Imports point down: routing and dialects know nothing of the faces above them."""
        for path in modules("routing") + modules("dialects"):
            assert not uses(path, "flexroute.proxy", "flexroute.engine", "flexroute.cli"), path
        for path in modules("dialects"):
            assert not uses(path, "flexroute.routing", "aiohttp", "httpx2"), path

    def test_modules_stay_small(self) -> None:
        """One idea per module: none grows past 500 lines, and the engine stays under 400."""
        for path in modules():
            assert len(path.read_text().splitlines()) <= 500, path
        assert len((ROOT / "engine.py").read_text().splitlines()) < 400

    def test_no_module_imports_a_module_that_imports_it(self) -> None:
        """No import circles among flexroute's modules (imports for type checking aside)."""
        graph = {module_name(path): runtime_imports(path) for path in modules()}
        for name, targets in graph.items():
            for target in targets:
                assert name not in closure(graph, target), f"{name} <-> {target}"

    def test_only_the_registry_knows_provider_names(self) -> None:
        """Nothing outside providers/ decides by comparing a provider's name."""
        pattern = re.compile(r"provider\S*\s*[!=]=\s*[\"'](openai|gemini|anthropic)")
        for path in modules():
            relative = path.relative_to(ROOT).as_posix()
            if not relative.startswith(("providers/", "emulator/", "demo.py")):
                assert not pattern.search(path.read_text()), relative


class TestPublicAPI:
    def test_all_names_exist_and_are_sorted(self) -> None:
        """``flexroute.__all__`` lists real names, once, in order."""
        assert sorted(flexroute.__all__) == list(flexroute.__all__)
        for name in flexroute.__all__:
            assert hasattr(flexroute, name), name


class TestReadme:
    def test_ci_runs_the_readmes_test_command(self) -> None:
        """`.ci/run` runs exactly the README's second command."""
        commands = re.findall(r"^(python3 -m venv .*)$", README.read_text(), flags=re.MULTILINE)
        assert len(commands) == 2
        assert commands[1] in CI.read_text().splitlines()
        assert "flexroute demo" in commands[0]

    def test_the_settings_table_lists_every_setting(self) -> None:
        """Each setting's variable has a row in the README's Settings table."""
        from flexroute.config import Settings
        from flexroute.config_file import env_name

        text = README.read_text()
        table = text[text.index("## Settings") :].split("\n## ", 1)[0]
        rows = [line for line in table.splitlines() if line.startswith("| `")]
        for field in Settings.model_fields:
            name = env_name(field)
            assert any(f"`{name}`" in row.split(" | ")[0] for row in rows), name
