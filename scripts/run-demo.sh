#!/usr/bin/env bash
# `make run`: the demo app on 127.0.0.1:3000 and Sidegate in front of it on 127.0.0.1:8080.
# Ctrl-C stops both (Sidegate drains first).
set -euo pipefail
cd "$(dirname "$0")/.."
config=examples/sidegate.yaml

.venv/bin/python examples/demo_app.py --port 3000 &
app=$!
.venv/bin/sidegate run --config "$config" &
gateway=$!
trap 'kill -TERM $gateway $app 2>/dev/null || true; wait 2>/dev/null || true' EXIT INT TERM

.venv/bin/python - <<'PY'
import sys, time, urllib.request
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen("http://127.0.0.1:9901/ready", timeout=1) as r:
            if r.status == 200:
                break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("Sidegate did not become ready in 15 s (see the log above)")
PY

cat <<'TXT'

  Sidegate is running in front of the demo app. Try:

    curl -i http://127.0.0.1:8080/                      # proxied: see X-Forwarded-For, Via, X-Request-Id
    curl -i http://127.0.0.1:8080/api/v1/hello          # route "api": /api/v1 stripped before the app
    curl -i http://127.0.0.1:8080/maintenance           # answered by the gateway (direct_response)
    curl -N http://127.0.0.1:8080/sse?n=5               # server-sent events, streamed as they come
    curl -i -X POST --data-binary @README.md http://127.0.0.1:8080/echo

    curl http://127.0.0.1:9902/ready                     # health: probes and metrics only
    curl http://127.0.0.1:9901/ready                     # admin: probes, metrics, config
    curl http://127.0.0.1:9901/metrics
    curl http://127.0.0.1:9901/config_dump
    curl -X POST http://127.0.0.1:9901/reload            # or edit examples/sidegate.yaml: it reloads itself

    http://127.0.0.1:9901/                               # the dashboard (open it in a browser)
    curl http://127.0.0.1:9901/explain/ID                # ID: the X-Request-Id of any response above
    curl http://127.0.0.1:9901/traces                    # recent spans (W3C traceparent sent to the app)
    curl http://127.0.0.1:9901/stats                     # JSON: routes, clusters, stats

  Each request prints one JSON access log line below.

  Ctrl-C stops both.
TXT
wait $gateway
