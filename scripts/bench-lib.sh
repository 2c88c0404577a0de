# Shared pieces of the paired benchmark scripts (bench-tui-overhead, bench-attach-overhead);
# sourced, not run. Needs $bin (the wsdscope binary) and python3.

# FILE.h5 → the engine's wall seconds per step of run 0 (`wall_s / steps` from
# `inspect --json`: every step plus its evals, from its first to its last event).
per_step() {
  "$bin" inspect "$1" --json | python3 -c '
import json, sys
r = json.load(sys.stdin)["runs"][0]
assert r["status"] == "completed", r["status"]
print(r["wall_s"] / r["steps"])'
}

# The median of the numbers given as arguments, to 4 decimals.
median() {
  printf '%s\n' "$@" | sort -g | python3 -c '
import sys
v = [float(x) for x in sys.stdin]
n = len(v)
print(f"{(v[n//2] if n % 2 else (v[n//2-1] + v[n//2]) / 2):.4f}")'
}
