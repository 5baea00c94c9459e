"""The package reads as its domains with no import cycles between them (issue 11): every
module-level `from otp_service.X…` import, taken between top-level packages and modules
(api, otp, limits, validation, delivery, suppression, webhooks, settings, …), forms no cycle.
Imports inside functions (deferred on purpose, e.g. the CLI's) are not counted."""

import ast
from pathlib import Path

import otp_service

ROOT = Path(otp_service.__file__).parent


def _unit(path: Path) -> str:
    first = path.relative_to(ROOT).parts[0]
    return first.removesuffix(".py")


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        unit = _unit(path)
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                parts = target.split(".")
                if parts[0] == "otp_service" and len(parts) > 1 and parts[1] != unit:
                    graph.setdefault(unit, set()).add(parts[1])
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            found = visit(nxt, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def test_domains_are_packages() -> None:
    for domain in ("api", "otp", "limits", "validation", "delivery", "suppression", "webhooks"):
        assert (ROOT / domain / "__init__.py").is_file(), domain


def test_no_import_cycle_between_packages() -> None:
    assert find_cycle(package_graph()) is None


def test_the_check_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_limits_and_delivery_do_not_import_each_other() -> None:
    graph = package_graph()
    assert "delivery" not in graph.get("limits", set())
    assert "limits" not in graph.get("delivery", set())


def test_the_send_decision_needs_only_the_jobs_format_of_delivery() -> None:
    # otp seals a job (delivery.jobs) and its own script queues it; the queue's and the worker's
    # internals are delivery's alone.
    imported = {
        node.module
        for path in (ROOT / "otp").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("otp_service.delivery")
    }
    assert imported == {"otp_service.delivery.jobs"}
