"""A launcher that waits to be moved into its cgroup, then becomes the user's command.

    python -m oomguard.repro.launch FD CMD ARGS...

It blocks reading FD until the harness has moved it into the capped cgroup (and closes
its end), then ``execvp`` s CMD: every byte CMD ever allocates is charged to the cap.
"""

from __future__ import annotations

import os
import sys

from oomguard.limits.process import read_oom_score_adj, set_oom_score_adj


def main(argv: list[str]) -> int:
    fd = int(argv[0])
    os.read(fd, 1)  # returns when the harness writes or closes its end
    os.close(fd)
    # a protected supervisor (oom_score_adj -1000) must not pass its immunity on: a cgroup
    # whose every task is unkillable hangs at its limit instead of killing
    current = read_oom_score_adj()
    if current is not None and current < 0:
        set_oom_score_adj(0)
    command = argv[1:]
    try:
        os.execvp(command[0], command)  # noqa: S606 - an argv list, never a shell
    except OSError as err:
        print(f"oomguard: cannot run {command[0]!r}: {err.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
