# The two commands a newcomer runs (as root): `make demo` and `make test`.
PY := .venv/bin/python
NETLAB := .venv/bin/netlab

.PHONY: setup demo test unit bench harden clean

setup:
	./scripts/provision.sh

demo: setup
	@$(NETLAB) down netlab >/dev/null 2>&1 || true
	$(NETLAB) up topologies/default.yaml
	$(NETLAB) get nodes -o wide
	$(NETLAB) get pods -A -o wide
	$(NETLAB) get services -o wide
	$(NETLAB) get endpoints
	kubectl --context netlab-netlab get endpointslices
	$(NETLAB) probe
	@echo
	@echo "The lab is up. Look around: ip netns list; netlab exec netlab-worker -- ip route;"
	@echo "  netlab iptables netlab-worker -t nat   (kube-proxy's and flannel's rules)"
	@echo "  kubectl get pods -A -o wide; kubectl exec client -- curl -s http://web/hostname"
	@echo "Remove it with: netlab down"

test: setup
	.venv/bin/lint-imports
	$(PY) -m pytest -q -ra tests
	$(MAKE) --no-print-directory harden

# Nothing leaks, nothing is left half-built: repetition and crashes, with their figures.
harden: setup
	cd hardening && ../$(PY) soak.py --cycles 50
	cd hardening && ../$(PY) crash.py --kills 20

unit: setup
	.venv/bin/lint-imports
	$(PY) -m pytest -q tests/unit

bench: setup
	$(PY) bench/bringup.py
	$(PY) bench/api.py
	$(PY) bench/kube_proxy.py
	$(PY) bench/netpol.py
	$(PY) bench/dns.py
	$(PY) bench/datapath.py

clean:
	-$(NETLAB) cleanup --all
	rm -rf .venv .pytest_cache *.egg-info
