"""The job's function: one chat request to the model server (the URL comes from the item).

Under memory pressure it trims the conversation to its last message, as an LLM batch's
context manager does, using the pressure oomguard sends with every batch.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from oomguard import worker_context


def chat(item: dict[str, Any]) -> dict[str, Any]:
    messages = item["messages"]
    if worker_context().pressure.level != "normal":
        messages = messages[-1:]  # trim the context: less for the server to hold
    body = json.dumps({"model": "tiny", "messages": messages}).encode()
    url = item["url"]
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"request {item['id']}: {url!r} is not an http(s) URL")
    request = urllib.request.Request(  # noqa: S310 - checked to be http(s) just above
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the example's own server
        answer = json.loads(response.read())
    return {
        "id": item["id"],
        "answer": answer["message"]["content"],
        "context": answer["context_messages"],
    }
