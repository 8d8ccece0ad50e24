"""A Ray address checked before any driver starts: `--ray HOST:PORT`, `[IPv6]:PORT` or `auto`, a TCP connect
within CONNECT_S seconds, then one gRPC call of a Ray cluster's head (its GCS's GetClusterId,
through grpcio and the stub Ray ships) within PROBE_S seconds. Anything else that answers (a web
server, a database, another Ray port) is refused in one line, within 10 s in all."""
from __future__ import annotations

import os
import re
import socket

from core.errors import BadInput, LabError

CONNECT_S = 5.0       # seconds to wait for the cluster's address to answer (the TCP connect)
PROBE_S = 5.0         # seconds, after that, for it to answer as a Ray cluster's GCS
class ClusterError(LabError):
    """The cluster cannot be reached or cannot run this sweep; the message says why."""


class NoAddress(ClusterError, BadInput):
    """`--ray ''`: a usage error (exit status 2), as `--csv ''` is."""


def check_address(address: str) -> str:
    """Check a `--ray ADDRESS` without joining the cluster, and return the 'HOST:PORT' to join
    ('[HOST]:PORT' for an IPv6 host). No driver starts and nothing is created before it passes.

    Refused, each with a one-line ClusterError: an empty address; one that is neither HOST:PORT
    nor 'auto' (a ray:// address; for 'auto', a $RAY_ADDRESS that is neither); 'auto' with no
    cluster found; an address where nothing answers (the TCP connect, CONNECT_S seconds at most);
    an address where something answers that is not a Ray cluster: the head's GCS must answer its
    GetClusterId gRPC call with a cluster id within PROBE_S seconds (ray.init alone would retry
    for minutes). A refusal comes within CONNECT_S + PROBE_S = 10 s."""
    target, origin = _resolve(address)
    host, port = _split(target, origin)
    where = target + _WHERE[origin]
    try:
        conn = socket.create_connection((host, port), timeout=CONNECT_S)
    except OSError as exc:
        raise ClusterError(f"no Ray cluster answers at {where}: {exc.strerror or exc or type(exc).__name__}; "
                           "start one with `ray start --head`") from None
    not_ray = (f"something answers at {where} but it is not a Ray cluster ({{}}); give the head's address as "
               "`ray start --head` prints it (port 6379 by default)")
    conn.close()
    code, said = _gcs_cluster_id(target)
    if code == "UNAUTHENTICATED" and (token := _auth_headers()):  # again, with this machine's token
        code, said = _gcs_cluster_id(target, token)
    if code == "UNAUTHENTICATED":  # a Ray GCS, with token authentication
        raise ClusterError(f"the Ray cluster at {where} asks for an authentication token "
                           f"({said or 'none was sent'}); set RAY_AUTH_MODE=token and the cluster's token "
                           "(RAY_AUTH_TOKEN or ~/.ray/auth_token) here")
    if code == "DEADLINE_EXCEEDED":
        raise ClusterError(not_ray.format(f"no answer as one within {PROBE_S:.0f} s"))
    if code == "UNIMPLEMENTED":
        raise ClusterError(not_ray.format("it speaks gRPC, but has no Ray GCS service"))
    if code == "NO_ID":
        raise ClusterError(not_ray.format("it speaks gRPC, but its GetClusterId reply holds no cluster id"))
    if code is not None:
        raise ClusterError(not_ray.format(f"it does not answer a gRPC call as a Ray cluster's head does: {said}"))
    return target


_WHERE = {"given": "", "env": " ($RAY_ADDRESS, read by --ray auto)", "found": " (found by --ray auto)"}
def _resolve(address: str) -> tuple[str, str]:
    """(the address to check, where it came from: 'given', 'env' or 'found'). 'auto' is
    $RAY_ADDRESS where it is set (as ray.init reads it), else the cluster started on this machine."""
    address = address.strip()
    if not address:
        raise NoAddress("--ray needs an address (HOST:PORT or auto); leave the option out to train here")
    if address != "auto":
        return address, "given"
    named = os.environ.get("RAY_ADDRESS", "").strip()
    if named and named != "auto":
        return named, "env"
    try:
        from ray._private.services import canonicalize_bootstrap_address  # how ray.init reads 'auto'
    except ImportError:
        raise ClusterError("Ray is not installed in this environment: pip install -r requirements.txt") from None
    try:
        found = canonicalize_bootstrap_address("auto")
    except (ConnectionError, ValueError, OSError):
        found = None
    if not found:
        raise ClusterError("--ray auto: no Ray cluster runs on this machine and $RAY_ADDRESS is not set; "
                           "start one with `ray start --head`, or give its address")
    return found, "found"


def _split(target: str, origin: str) -> tuple[str, int]:
    """'HOST:PORT' or '[IPv6]:PORT' -> (host, port), the brackets taken off for the connect."""
    named = {"given": repr(target), "env": f"--ray auto reads $RAY_ADDRESS, which holds {target!r}",
             "found": f"--ray auto found {target!r}"}[origin]
    fix = {"given": "give HOST:PORT (e.g. 10.0.0.5:6379) or 'auto'",
           "env": "set $RAY_ADDRESS to the head's HOST:PORT (e.g. 10.0.0.5:6379), or unset it to use the "
                  "cluster started on this machine",
           "found": "give the head's HOST:PORT"}[origin]

    def refuse(why: str = "") -> ClusterError:
        if origin == "given":
            return ClusterError(f"{named} is not a Ray cluster address{why}: {fix}")
        return ClusterError(f"{named}: not a Ray cluster address{why}; {fix}")
    if target.startswith("ray://"):
        raise ClusterError(f"{named}: Ray Client addresses (ray://) are not supported; give the head's HOST:PORT "
                           "(`ray start --head` prints it) and run the sweep on a cluster node")
    bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]:(\d{1,5})", target)
    if bracketed:
        host, port = bracketed[1], bracketed[2]
    else:
        host, sep, port = target.rpartition(":")
        if ":" in host:
            raise refuse(f" (an IPv6 address goes in brackets: [{host}]:{port})")
        if not sep or not re.fullmatch(r"[\w.-]+", host) or not port.isdigit():
            raise refuse()
    if not 0 < int(port) < 65536:
        raise refuse(f" (port {port} is not 1..65535)")
    return host, int(port)


def _gcs_cluster_id(target: str, metadata: list[tuple[str, str]] = ()) -> tuple[str | None, str]:
    """Call GetClusterId at `target` within PROBE_S seconds: (None, '') when a cluster id came
    back, else (the gRPC status code's name, or 'NO_ID' for an empty reply; what the call said)."""
    import grpc  # heavy, as Ray is: both load only for a sweep
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    with grpc.insecure_channel(target) as channel:
        try:
            reply = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=PROBE_S, metadata=list(metadata) or None)
        except grpc.RpcError as exc:
            said = (exc.details() or "").strip().splitlines()
            said = said[0].rpartition("last error: ")[2] if said else ""  # grpc's own wording before it
            said = re.sub(r"^[A-Z_]+: (ipv[46]:\S+: )?", "", said)  # 'UNAVAILABLE: ipv4:HOST:PORT: ' too
            return exc.code().name, said[:200]
    return (None, "") if reply.cluster_id else ("NO_ID", "")


def _auth_headers() -> list[tuple[str, str]]:
    """The header that carries this machine's Ray authentication token (RAY_AUTH_MODE=token), or none."""
    try:
        from ray._raylet import AuthenticationTokenLoader  # heavy: Ray loads only for a sweep
        loader = AuthenticationTokenLoader.instance()
        return ([(k.lower(), v) for k, v in loader.get_token_for_http_header().items()]  # gRPC: lower-case keys
                if loader.has_token() else [])
    except Exception:  # no Ray here, or no token to read: the check goes on without one
        return []
