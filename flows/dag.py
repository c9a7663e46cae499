"""The stages of dvc.yaml in DAG order, read through DVC itself (no second copy of the graph)."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
from dvc.repo import Repo


def stage_order(workspace: Path) -> list[str]:
    """Stage names (foreach/matrix items included) so that every stage follows its deps."""
    with Repo(str(workspace)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        names = {stage: stage.name for stage in graph.nodes}
        ordered = nx.lexicographical_topological_sort(graph.reverse(copy=True), key=lambda s: names[s])
        return [names[stage] for stage in ordered]
