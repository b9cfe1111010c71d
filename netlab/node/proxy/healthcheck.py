"""kube-proxy's health servers (pkg/proxy/healthcheck): on every node, `:10256/healthz`
(this node's proxy is healthy) and each Local LoadBalancer Service's healthCheckNodePort,
200 while the Service has a ready endpoint on the node and 503 otherwise — what a cloud
load balancer checks. One lab process serves every node (`python -m netlab.node.proxy.healthcheck LAB`).
"""

import asyncio
import datetime
import json
import sys

from netlab.kernel import netns as ns
from netlab.node import runtime
from netlab.node.kubelet import PodServer, serve_pods

HEALTHZ_PORT = 10256


def service_health(state, hc_port, node):
    """(status, body) of a healthCheckNodePort on a node: 200 while the Service has a ready
    endpoint there, 503 otherwise."""
    svc = next((s for s in state.services if s.health_check_node_port == hc_port), None)
    if svc is None:
        return 404, "404 page not found\n"
    ep = state.endpoints_of(svc)
    local = len({a.ip for s in (ep.subsets if ep else ()) for a in s.addresses if a.node == node})
    body = json.dumps({"service": {"namespace": svc.namespace, "name": svc.name}, "localEndpoints": local,
                       "serviceProxyHealthy": True})
    return (200 if local else 503), body


class HealthServer(PodServer):
    name = "kube_proxy"

    def updated(self, state):
        self.state = state

    def targets(self, state):
        hc = sorted({(s.health_check_node_port, "TCP") for s in state.services if s.health_check_node_port})
        return {n.name: (n.netns, [(HEALTHZ_PORT, "TCP")] + hc, n) for n in state.nodes if ns.exists(n.netns)}

    async def serve(self, node, proto, port, sock):
        return await asyncio.start_server(lambda r, w: self._http(node.name, port, r, w), sock=sock)

    async def _http(self, node, port, reader, writer):
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            path = head.split(b" ", 2)[1].decode(errors="replace") if head.count(b" ") >= 2 else ""
            if port == HEALTHZ_PORT:
                now = datetime.datetime.now(datetime.timezone.utc).isoformat()
                ok = path in ("/healthz", "/livez")
                status, body = (200, json.dumps({"lastUpdated": now, "currentTime": now, "nodeEligible": True})) \
                    if ok else (404, "404 page not found\n")
            else:
                status, body = service_health(self.state, port, node)
            reason = {200: "OK", 503: "Service Unavailable", 404: "Not Found"}[status]
            data = body.encode()
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                         f"X-Content-Type-Options: nosniff\r\nContent-Length: {len(data)}\r\n"
                         "Connection: close\r\n\r\n".encode() + data)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


runtime.register_process(runtime.LabProcess("kube_proxy", __name__))


if __name__ == "__main__":
    serve_pods(HealthServer, sys.argv[1])
