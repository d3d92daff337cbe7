# Sourced by tests/prepare.sh (which defines apt_install).
# redis-server is the real peer of the Redis global-data tests; without it they skip.
if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
    # The package may also enable a system service on port 6379; the tests start their
    # own server on a free port and neither need nor touch it.
    command -v redis-server >/dev/null 2>&1 \
        || echo "prepare: redis-server unavailable; the Redis global-data tests will skip" >&2
fi
