#!/bin/sh
# Inside the v2 lane's VM, chrooted into the host's tree (read-only): run the tests (or the
# lane's --run command), leave the exit status in the read-write results share.
# Started by tests/vm/lane.py; PATH and OOMGUARD_LANE_PYTHON come from the host.
repo=$(cd "$(dirname "$0")/../.." && pwd)
results="$repo/.vm/results"
python="${OOMGUARD_LANE_PYTHON:-python3}"
export HOME=/tmp/home TMPDIR=/tmp MPLCONFIGDIR=/tmp/mpl PY_COLORS=0
export PYTHONPATH="$repo/src" PYTHONDONTWRITEBYTECODE=1
export OOMGUARD_REQUIRE_CGROUPS=1 OOMGUARD_LANE=v2
mkdir -p "$HOME" "$MPLCONFIGDIR"
cd "$repo" || exit 1
echo "lane: $(uname -r); cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers);" \
  "swap: $(awk '/SwapTotal/ {print $2 " kB"}' /proc/meminfo)"
if [ -f "$results/command" ]; then
  sh -c "$(cat "$results/command")"
else
  args=$(cat "$results/args")  # the lane's selection (tests/vm/lane.py) or the developer's
  eval "set -- $args"  # the lane writes them as one shell-quoted line
  "$python" -m pytest -p no:cacheprovider --timeout=900 --durations=15 \
    --junitxml="$results/junit.xml" "$@"
fi
echo $? > "$results/rc"
