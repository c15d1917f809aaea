"""The report's view of a job run on a Dask cluster: each node's figures from summary.json
(``cluster.nodes``, by address, :meth:`oomguard.dask.cluster.NodeTable.figures`), the
nodes that left with Dask's reason, and the node an attempt of the manifest ran on."""

from __future__ import annotations

import html
from typing import Any

# a node's figures, as the Nodes table shows them: (key in summary.json, column heading)
COLUMNS = (
    ("batches", "batches"),
    ("items", "items in them"),
    ("items_done", "items done"),
    ("oom_kills", "OOM kills"),
    ("batches_lost", "batches lost"),
    ("peak_mb", "peak MiB"),
)


def cluster_nodes(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The run's nodes by address, or none for a run on one machine."""
    cluster = summary.get("cluster")
    if not isinstance(cluster, dict) or not isinstance(cluster.get("nodes"), dict):
        return {}
    return {str(address): dict(figures) for address, figures in cluster["nodes"].items()}


def node_cell(address: Any, nodes: dict[str, dict[str, Any]]) -> str:
    """A node as a person reads it: its Dask name, and its address beside it."""
    if address in (None, ""):
        return ""
    name = (nodes.get(str(address)) or {}).get("name")
    text = html.escape(str(address))
    if name not in (None, "", address):
        text = f'{html.escape(str(name))} <span class="label">{text}</span>'
    return text


def nodes_section(summary: dict[str, Any]) -> list[str]:
    """The Nodes table (what each node ran, lost and peaked at, and why it left) and the
    nodes lost with Dask's reason; nothing for a run on one machine."""
    nodes = cluster_nodes(summary)
    if not nodes:
        return []
    cluster = summary["cluster"]
    lost = {str(k): str(v) for k, v in (cluster.get("lost") or {}).items()}
    headings = "".join(f"<th>{html.escape(heading)}</th>" for _, heading in COLUMNS)
    parts = [
        f"<h2>Nodes</h2><p>{len(nodes)} node(s) on {html.escape(str(cluster.get('address')))}, "
        f"{len(lost)} lost; at most {cluster.get('in_flight_per_node')} batches in flight "
        "per node.</p>",
        f'<table class="nodes"><tr><th>node</th>{headings}<th>left</th></tr>',
    ]
    for address, figures in sorted(nodes.items(), key=lambda pair: str(pair[1].get("name"))):
        cells = "".join(f"<td>{_figure(figures.get(key))}</td>" for key, _ in COLUMNS)
        left = figures.get("left") or lost.get(address)
        parts.append(
            f"<tr><td>{node_cell(address, nodes)}</td>{cells}"
            f"<td>{html.escape(str(left)) if left else 'connected to the end'}</td></tr>"
        )
    parts.append("</table>")
    if lost:
        parts.append(
            '<h2>Nodes lost</h2><table class="nodes-lost"><tr><th>node</th><th>batches lost '
            "with it</th><th>Dask's reason</th></tr>"
        )
        for address, reason in sorted(lost.items()):
            batches = (nodes.get(address) or {}).get("batches_lost", 0)
            parts.append(
                f"<tr><td>{node_cell(address, nodes)}</td><td>{batches}</td>"
                f"<td>{html.escape(reason)}</td></tr>"
            )
        parts.append("</table>")
    return parts


def _figure(value: Any) -> str:
    return "?" if value is None else html.escape(str(value))
