"""2,000 chat requests against a model server that keeps dying of OOM: every one answered once.

    python examples/model_server/run.py [--requests 2000] [--run-dir runs/chat]

The server (server.py) leaks 1 MiB per request inside a 160 MiB cgroup, so the kernel
kills it every ~130 requests. oomguard notices, requeues what was in flight as
``backend_failure`` (not the requests' fault), restarts the server, waits for /health,
and goes on.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository, so workers import examples.model_server

from oomguard import BackendConfig, Job  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/chat"))
    parser.add_argument("--leak-mb", type=int, default=1)
    parser.add_argument("--server-memory", default="160m")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args.run_dir.mkdir(parents=True, exist_ok=True)
    requests = args.run_dir / "requests.jsonl"
    with open(requests, "w") as handle:
        for number in range(args.requests):
            messages = [
                {"role": "user", "content": f"question {number}, part {part}"} for part in range(3)
            ]
            handle.write(
                json.dumps({"id": number, "url": f"{url}/api/chat", "messages": messages}) + "\n"
            )
    backend = BackendConfig(
        command=[
            sys.executable,
            str(HERE / "server.py"),
            "--port",
            str(port),
            "--leak-mb",
            str(args.leak_mb),
        ],
        health_url=f"{url}/health",
        memory=args.server_memory,
        max_restarts=100,
        backoff_initial=0.1,
        backoff_max=1.0,
    )
    result = Job(
        "examples.model_server.client:chat",
        source=requests,
        sink=args.run_dir / "answers.jsonl",
        run_dir=args.run_dir,
        workers=2,
        batch_size=10,
        backend=backend,
    ).run()
    backend_summary = result.summary["backend"]
    print(
        f"{result.succeeded} of {args.requests} requests answered, {len(result.quarantined)} quarantined; "
        f"the server was OOM-killed {backend_summary['oom_kills']} times and restarted "
        f"{backend_summary['restarts']} times; {backend_summary['failed_requests_requeued']} requests "
        f"requeued; artifacts in {result.run_dir}"
    )
    raise SystemExit(result.exit_code)


if __name__ == "__main__":
    main()
