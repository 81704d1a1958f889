#!/bin/sh
# Checks the deployment files with the tools that understand them, when
# they are installed (Debian: `apt-get install systemd prometheus`, which
# provide systemd-analyze and promtool). Without a tool its check is
# skipped with a note; FHIRFERRY_DEPLOY_CHECK_STRICT=1 makes that an error.
# Run from anywhere: deploy/check.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
status=0
skip() {
	echo "check.sh: SKIP $1"
	if [ "${FHIRFERRY_DEPLOY_CHECK_STRICT:-0}" = 1 ]; then status=1; fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# systemd unit. verify wants ExecStart to exist: point it at a stub.
if command -v systemd-analyze >/dev/null 2>&1; then
	printf '#!/bin/sh\n' >"$tmp/fhirferry"
	chmod +x "$tmp/fhirferry"
	sed "s#/usr/local/bin/fhirferry#$tmp/fhirferry#" "$here/systemd/fhirferry.service" >"$tmp/fhirferry.service"
	if out=$(systemd-analyze verify "$tmp/fhirferry.service" 2>&1) && [ -z "$out" ]; then
		echo "check.sh: ok   systemd/fhirferry.service"
	else
		echo "$out"
		echo "check.sh: FAIL systemd/fhirferry.service"
		status=1
	fi
else
	skip "systemd-analyze not found (apt-get install systemd)"
fi

# Prometheus rules and their unit tests.
if command -v promtool >/dev/null 2>&1; then
	if promtool check rules "$here/prometheus/alerts.yml" && (cd "$here/prometheus" && promtool test rules alerts_test.yml); then
		echo "check.sh: ok   prometheus/alerts.yml"
	else
		echo "check.sh: FAIL prometheus/alerts.yml"
		status=1
	fi
else
	skip "promtool not found (apt-get install prometheus)"
fi

# Every fhirferry_* series the alerts and the dashboard use must exist.
metrics="$here/../pipeline/metrics.go"
if [ -f "$metrics" ]; then
	for name in $(grep -ohE 'fhirferry_[a-z_]+' "$here/prometheus/alerts.yml" "$here/grafana/fhirferry.json" | sed -E 's/_(bucket|sum|count)$//' | sort -u); do
		if ! grep -q "\"$name\"" "$metrics"; then
			echo "check.sh: FAIL $name is used by alerts or the dashboard but pipeline/metrics.go does not define it"
			status=1
		fi
	done
	echo "check.sh: done metric names"
fi

# Kubernetes: both kustomizations render (offline: every file they list
# exists and parses, the component applies). deploy_test.go also decodes
# every object strictly into the Kubernetes API types.
if command -v kubectl >/dev/null 2>&1; then
	for k in kubernetes:6 kubernetes/with-servicemonitor:7; do
		dir=${k%%:*} want=${k##*:}
		if out=$(kubectl kustomize "$here/$dir" 2>&1) && [ "$(printf '%s\n' "$out" | grep -c '^kind:')" -eq "$want" ]; then
			echo "check.sh: ok   $dir (kustomize renders $want objects)"
		else
			echo "$out" | tail -5
			echo "check.sh: FAIL $dir: kubectl kustomize (want $want objects)"
			status=1
		fi
	done
else
	skip "kubectl not found: kubernetes/ not rendered"
fi

# JSON and YAML parse.
if command -v python3 >/dev/null 2>&1; then
	python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$here/grafana/fhirferry.json" || status=1
	if python3 -c 'import yaml' 2>/dev/null; then
		for f in "$here"/kubernetes/*.yaml "$here"/kubernetes/*/*.yaml "$here"/kubernetes/*/*/*.yaml; do
			python3 -c 'import yaml,sys; list(yaml.safe_load_all(open(sys.argv[1])))' "$f" || { echo "check.sh: FAIL $f"; status=1; }
		done
	fi
fi
exit $status
