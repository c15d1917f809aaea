"""One supervisor of the torture test: runs (or resumes) a job until done or killed.

python -m tests.journal.torture_child RUN_DIR SOURCE SINK
"""

from __future__ import annotations

import sys
from pathlib import Path

from oomguard import Job

if __name__ == "__main__":
    run_dir, source, sink = sys.argv[1:4]
    sink_spec: object = sink
    if sink.endswith(".db"):
        from examples.two_phase_sqlite_sink import SqliteSink

        sink_spec = SqliteSink(sink)
    job = Job(
        "tests.engine.workloads:work",
        source=Path(source),
        sink=sink_spec,
        run_dir=Path(run_dir),
        workers=2,
        batch_size=10,
        memory="512m",
        commit_interval=0.02,
        log_format="json",
    )
    result = job.run()
    sys.exit(result.exit_code)
