#!/bin/sh
# The image's entrypoint (docs/node.md, "Docker"); also usable on its own.
#
#   federation-entrypoint                 serve --config $FEDERATION_CONFIG (the default)
#   federation-entrypoint healthcheck     exit 0 iff this node's /healthz answers 200
#   federation-entrypoint ARGS...         federation ARGS... (feed create, token issue, sync, ...)
#
# FEDERATION_HOME (default /var/lib/federation, the image's volume) holds the
# databases and private/ (keys, 0600); FEDERATION_CONFIG defaults to
# $FEDERATION_HOME/node.toml. The node replaces this shell (exec), so the
# container's SIGTERM reaches it directly and it stops within 2 s.
set -eu

: "${FEDERATION_HOME:=/var/lib/federation}"
: "${FEDERATION_CONFIG:=$FEDERATION_HOME/node.toml}"
export FEDERATION_HOME FEDERATION_CONFIG
umask 077  # databases and keys the node or a command creates are the service user's alone
FEDERATION="${FEDERATION_BIN:-federation}"

need_config() {
    if [ ! -f "$FEDERATION_CONFIG" ]; then
        echo "federation-entrypoint: no node config at $FEDERATION_CONFIG (set FEDERATION_CONFIG, or put" \
             "node.toml in the home volume; docs/node.md)" >&2
        exit 2
    fi
}

case "${1:-serve}" in
    healthcheck)
        need_config
        listen=$("$FEDERATION" node check "$FEDERATION_CONFIG" | sed -n 's/^listen //p')
        port=${listen##*:}
        # The node listens on [node] listen; the check asks it on loopback.
        exec python3 -c 'import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=4).status == 200 else 1)
except Exception as e:
    print(f"healthcheck: {sys.argv[1]}: {e}", file=sys.stderr)
    sys.exit(1)' "http://127.0.0.1:$port/healthz"
        ;;
    serve)
        if [ "$#" -le 1 ]; then
            need_config
            exec "$FEDERATION" serve --config "$FEDERATION_CONFIG"
        fi
        exec "$FEDERATION" "$@"
        ;;
    *)
        exec "$FEDERATION" "$@"
        ;;
esac
