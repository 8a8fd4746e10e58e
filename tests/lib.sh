# Shared by tests/interop/run.sh and tests/e2e/run.sh (sourced).

# addr LOG: the first http://127.0.0.1:PORT a server's log names, waiting
# up to 10 s for it.
addr() {
  for _ in $(seq 100); do
    a=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$1" | head -1 || true)
    [ -n "$a" ] && { echo "$a"; return; }
    sleep 0.1
  done
  cat "$1" >&2
  return 1
}
