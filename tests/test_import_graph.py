"""The package's import graph (tests/import_graph.py): no cycle, every local import explained."""

import import_graph as graph
import pytest

EDGES = graph.imports()


def test_the_finder_sees_a_cycle_closed_inside_a_function():
    edges = [
        graph.Import("p.a", "p.b", None, 1),
        graph.Import("p.b", "p.c", None, 1),
        graph.Import("p.c", "p.a", "late", 9),
        graph.Import("p.c", "p.d", None, 2),
    ]
    assert graph.cycles(edges) == [["p.a", "p.b", "p.c"]]
    assert graph.cycles(edges[:2] + edges[3:]) == []


def test_the_package_import_graph_has_no_cycle_counting_function_local_imports():
    assert graph.cycles(EDGES) == []


def test_lazy_exports_resolve_to_the_module_that_defines_them():
    # evaluation imports `eval_dataset` from the data package, which loads it lazily from
    # its pipeline module: the edge goes there, not to the package.
    assert any(
        e.source == "keras_alexnet.evaluation" and e.target == "keras_alexnet.data.pipeline"
        for e in EDGES
    )


@pytest.mark.parametrize("edge", [e for e in EDGES if e.function], ids=str)
def test_every_function_local_import_is_there_to_defer_a_heavy_package(edge):
    reason = graph.why_local(edge, EDGES, graph.heavy_at_top(EDGES))
    assert reason is not None, f"{edge}: nothing heavy deferred, no cycle closed: move it up"
