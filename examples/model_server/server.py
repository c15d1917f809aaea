"""A small Ollama-style model server, written for the example: ``/api/chat`` and ``/health``.

    python examples/model_server/server.py --port 11434 [--leak-mb 1] [--unhealthy-after N]

``--leak-mb`` makes every request keep that much memory for good (a KV cache that never
shrinks), so in a capped cgroup the server dies of OOM after enough requests, like the
real ones do. ``--unhealthy-after`` makes ``/health`` and ``/api/chat`` answer 503 after that many
requests while the process lives on (a wedged server). It binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LEAK: list[bytearray] = []
LOCK = threading.Lock()
STATE = {"requests": 0}


def make_handler(leak_mb: int, unhealthy_after: int | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path != "/health":
                self._send(404, {"error": "not found"})
                return
            if unhealthy_after is not None and STATE["requests"] >= unhealthy_after:
                self._send(503, {"status": "wedged"})
                return
            self._send(200, {"status": "ok", "requests": STATE["requests"]})

        def do_POST(self) -> None:
            if self.path != "/api/chat":
                self._send(404, {"error": "not found"})
                return
            length = int(self.headers.get("Content-Length", "0"))
            request = json.loads(self.rfile.read(length) or b"{}")
            if unhealthy_after is not None and STATE["requests"] >= unhealthy_after:
                self._send(503, {"error": "wedged: Service Unavailable"})
                return
            with LOCK:
                STATE["requests"] += 1
                if leak_mb:
                    block = bytearray(leak_mb * 1024 * 1024)
                    block[::4096] = b"\x01" * len(block[::4096])  # resident, not just reserved
                    LEAK.append(block)
            messages = request.get("messages", [])
            last = messages[-1]["content"] if messages else ""
            self._send(
                200,
                {
                    "model": request.get("model", "tiny"),
                    "message": {"role": "assistant", "content": f"echo: {last}"},
                    "context_messages": len(messages),
                    "done": True,
                },
            )

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--leak-mb", type=int, default=0)
    parser.add_argument("--unhealthy-after", type=int, default=None)
    args = parser.parse_args()
    server = ThreadingHTTPServer(
        ("127.0.0.1", args.port), make_handler(args.leak_mb, args.unhealthy_after)
    )
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
