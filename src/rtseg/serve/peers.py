"""Hostile and broken peers: every TCP connection is counted, timed and framed before pynetdicom sees it.

pynetdicom alone lets a peer that never negotiates hold an association slot for its
ACSE/network timeouts (30-60 s), reads a PDU of any announced length, and the
listening thread itself blocks on a TLS handshake that never comes. Here:

- a connection is admitted in the accept thread, before any thread or association
  exists: its address must be allowed, its address must hold fewer than
  ``max_associations_per_address`` connections, and when ``max_associations`` are
  open the oldest connection that has not negotiated yet is dropped for it;
- the first PDU (an A-ASSOCIATE-RQ, complete, TLS handshake included) must arrive
  within ``first_pdu_timeout`` seconds of the connect, a later PDU within
  ``idle_timeout`` seconds of its first byte;
- a PDU header announcing more than the peer may send (our maximum PDU length for
  P-DATA, 1 MiB for the A-ASSOCIATE-RQ, 64 KiB otherwise) or an unknown PDU type is
  answered with A-ABORT and the connection is closed before a byte of its body is read;
- the connection's slot is freed when its handler thread ends, which is when the
  association thread has ended and the socket is closed, whatever happened.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import threading
import time
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any, Optional

from pynetdicom import evt
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from rtseg.serve.logs import event

A_ASSOCIATE_RQ, P_DATA_TF = 0x01, 0x04
PDU_TYPES = range(0x01, 0x08)
MAX_ASSOCIATE_RQ = 1 << 20  # 128 presentation contexts of 20 transfer syntaxes each need about 200 kB
MAX_OTHER_PDU = 1 << 16  # release and abort PDUs are 10 bytes
# A-ABORT, source 2 (service provider), reason 6 (invalid PDU parameter value)
A_ABORT_INVALID = bytes([0x07, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x02, 0x06])


@dataclass(eq=False)
class Connection:
    """One open TCP connection: who, since when, whether it has negotiated (then it is never evicted)."""

    host: str
    sock: socket.socket
    accepted_at: float = field(default_factory=time.monotonic)
    negotiated: bool = False
    dropped: Optional[str] = None

    def drop(self, reason: str) -> None:
        """Close the connection now (the handler thread then ends and frees the slot)."""
        if self.dropped is None:
            self.dropped = reason
            event(logging.WARNING, "connection dropped", peer=self.host, reason=reason)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Connections:
    """The table of open connections, with the total and per-address limits."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total, self.per_address = total, per_address
        self._open: list[Connection] = []
        self._lock = threading.Lock()

    def admit(self, host: str, sock: socket.socket) -> tuple[Optional[Connection], str]:
        """A new connection, or None and why not."""
        with self._lock:
            live = [c for c in self._open if c.dropped is None]
            if sum(c.host == host for c in live) >= self.per_address:
                return None, f"{self.per_address} connections from this address already open (max_associations_per_address)"
            victim = None
            if len(live) >= self.total:
                waiting = [c for c in live if not c.negotiated]
                if not waiting:
                    return None, f"{self.total} associations already open (max_associations)"
                victim = min(waiting, key=lambda c: c.accepted_at)
            conn = Connection(host, sock)
            self._open.append(conn)
        if victim is not None:
            victim.drop(f"not negotiated after {time.monotonic() - victim.accepted_at:.1f} s and "
                        f"max_associations={self.total} reached: made room for a new connection")
        return conn, ""

    def release(self, conn: Connection) -> None:
        with self._lock:
            if conn in self._open:
                self._open.remove(conn)

    def close_all(self, reason: str) -> None:
        with self._lock:
            conns = list(self._open)
        for c in conns:
            c.drop(reason)

    def count(self) -> int:
        with self._lock:
            return len(self._open)


def _abort_and_drop(conn: Connection, sock: socket.socket, reason: str) -> None:
    """Tell the peer why (A-ABORT, invalid PDU parameter) and close."""
    try:
        sock.settimeout(1.0)
        sock.sendall(A_ABORT_INVALID)
    except OSError:
        pass
    conn.drop(reason)


def _recv_until(sock: socket.socket, n: int, deadline: float) -> bytes:
    """Up to ``n`` bytes before ``deadline`` (fewer: closed or too slow)."""
    out = bytearray()
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(n - len(out), 65536))
        except (TimeoutError, socket.timeout, OSError):
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


def read_first_pdu(sock: socket.socket, conn: Connection, timeout: float) -> Optional[bytes]:
    """The whole A-ASSOCIATE-RQ, read by us before pynetdicom sees the connection; None: dropped (reason logged)."""
    deadline = conn.accepted_at + timeout
    header = _recv_until(sock, 6, deadline)
    if len(header) < 6:
        conn.drop("closed before sending an A-ASSOCIATE-RQ" if time.monotonic() < deadline else
                  f"no A-ASSOCIATE-RQ within first_pdu_timeout={timeout:g} s")
        return None
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type != A_ASSOCIATE_RQ:
        _abort_and_drop(conn, sock, f"first PDU is not an A-ASSOCIATE-RQ (type 0x{pdu_type:02X})")
        return None
    if length > MAX_ASSOCIATE_RQ:
        _abort_and_drop(conn, sock, f"A-ASSOCIATE-RQ announces {length} bytes, more than the {MAX_ASSOCIATE_RQ} allowed")
        return None
    body = _recv_until(sock, length, deadline)
    if len(body) < length:
        conn.drop(f"A-ASSOCIATE-RQ not complete within first_pdu_timeout={timeout:g} s "
                  f"({len(body)} of {length} bytes; slow or stalled sender)")
        return None
    conn.negotiated = True
    return header + body


class GuardedSocket(AssociationSocket):
    """pynetdicom's socket, replaying the A-ASSOCIATE-RQ we read, then reading PDU by PDU: each header checked
    before its body is read, each PDU under a deadline of ``idle_timeout`` from its first byte."""

    def __init__(self, assoc: Any, client_socket: socket.socket, conn: Connection, idle_timeout: float,
                 first_pdu: bytes) -> None:
        super().__init__(assoc, client_socket=client_socket)
        self.conn, self.idle_timeout = conn, idle_timeout
        self._replay = bytearray(first_pdu)
        self._header = bytearray()
        self._body_left = 0
        self._deadline = 0.0

    @property
    def ready(self) -> bool:
        return bool(self._replay) or bool(super().ready)

    def _check_header(self) -> Optional[str]:
        pdu_type, _, length = struct.unpack(">BBL", bytes(self._header))
        if pdu_type not in PDU_TYPES:
            return f"unknown PDU type 0x{pdu_type:02X}"
        limit = MAX_OTHER_PDU
        if pdu_type == P_DATA_TF:
            limit = int(self.assoc.acceptor.maximum_length or MAX_OTHER_PDU << 10)
        if length > limit:
            return f"PDU of type 0x{pdu_type:02X} announces {length} bytes, more than the {limit} negotiated/allowed"
        self._body_left = length
        return None

    def recv(self, nr_bytes: int) -> bytearray:
        """Up to ``nr_bytes`` (fewer: the connection is closed, pynetdicom then ends the association)."""
        if self._replay:
            out = self._replay[:nr_bytes]
            del self._replay[:nr_bytes]
            return out
        out = bytearray()
        sock = self.socket
        while len(out) < nr_bytes and sock is not None:
            if not self._header and not self._body_left:
                self._deadline = time.monotonic() + self.idle_timeout  # a new PDU begins
            in_header = len(self._header) < 6
            want = min(nr_bytes - len(out), 6 - len(self._header) if in_header else self._body_left)
            chunk = _recv_until(sock, want, self._deadline)
            sock.settimeout(self.idle_timeout)
            out += chunk
            if len(chunk) < want:
                if time.monotonic() >= self._deadline:
                    self.conn.drop(f"a PDU did not arrive within idle_timeout={self.idle_timeout:g} s (slow sender)")
                return out
            if in_header:
                self._header += chunk
                if len(self._header) == 6:
                    problem = self._check_header()
                    if problem:
                        _abort_and_drop(self.conn, sock, problem)
                        return bytearray()  # pynetdicom sees a closed connection: no body is read or allocated
            else:
                self._body_left -= len(chunk)
            if len(self._header) == 6 and not self._body_left:
                self._header = bytearray()
        return out


class GuardedRequestHandler(RequestHandler):
    """One connection's thread: TLS handshake and first byte under the first-PDU timer, then the association,
    joined, so that the slot is freed only when the association has ended."""

    server: "GuardedServer"
    conn: Connection

    def handle(self) -> None:
        conn = self.conn = self.server.take(self.request)
        guard = self.server.guard
        try:
            if self.server.ssl_context is not None:
                self.request.settimeout(max(0.01, conn.accepted_at + guard.first_pdu_timeout - time.monotonic()))
                self.request = self.server.ssl_context.wrap_socket(self.request, server_side=True)
                conn.sock = self.request
            first = read_first_pdu(self.request, conn, guard.first_pdu_timeout)
            if first is None:
                return
            self.request.settimeout(guard.idle_timeout)
            assoc = self._create_association(first)
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()
            assoc.join()
        except OSError as exc:  # e.g. a TLS handshake that failed or timed out
            conn.drop(f"TLS handshake failed or timed out ({type(exc).__name__})")
        finally:
            try:
                self.request.close()
            except OSError:
                pass
            self.server.connections.release(conn)

    def _create_association(self, first_pdu: bytes = b"") -> Any:  # type: ignore[override]
        """pynetdicom's ``RequestHandler._create_association`` (3.0), with the guarded socket."""
        from pynetdicom.association import Association
        from pynetdicom._globals import MODE_ACCEPTOR

        assoc = Association(self.ae, MODE_ACCEPTOR)
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{time.strftime('%Y%m%d%H%M%S')}"
        guard = self.server.guard
        assoc.set_socket(GuardedSocket(assoc, self.request, self.conn, guard.idle_timeout, first_pdu))
        acceptor = assoc.acceptor
        acceptor.maximum_length = self.ae.maximum_pdu_size
        acceptor.ae_title = self.server.ae_title
        acceptor.address_info = self.local
        acceptor.implementation_class_uid = self.ae.implementation_class_uid
        acceptor.implementation_version_name = self.ae.implementation_version_name
        acceptor.supported_contexts = deepcopy(self.server.contexts)
        assoc.requestor.address_info = self.remote
        for kind, handlers in self.server._handlers.items():
            if kind.is_intervention and handlers:
                assoc.bind(kind, *handlers)
            elif isinstance(kind, evt.NotificationEvent):
                for handler in handlers:
                    assoc.bind(kind, handler[0], handler[1])
        return assoc


@dataclass(frozen=True)
class Guard:
    first_pdu_timeout: float
    idle_timeout: float


class GuardedServer(ThreadedAssociationServer):
    """Accepts, checks the address and the limits, and hands each connection to its own thread."""

    allowed: list[Any]  # these three are set per node by ``server_class``
    guard: Guard
    connections: Connections
    request_queue_size = 256  # a burst of connects must not overflow the backlog (SYN retries cost seconds)
    daemon_threads = True
    block_on_close = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # pynetdicom's signature, passed through
        self._conns: dict[int, Connection] = {}
        kwargs["request_handler"] = GuardedRequestHandler
        super().__init__(*args, **kwargs)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept only: the TLS handshake happens in the connection's thread, under the first-PDU timer."""
        assert self.socket is not None
        return self.socket.accept()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        host = client_address[0] if isinstance(client_address, tuple) else str(client_address)
        if self.allowed and not any(ipaddress.ip_address(host) in net for net in self.allowed):
            event(logging.WARNING, "connection refused", peer=host, reason="address not in allow_address")
            return False
        conn, why = self.connections.admit(host, request)
        if conn is None:
            event(logging.WARNING, "connection refused", peer=host, reason=why)
            return False
        self._conns[id(request)] = conn
        return True

    def take(self, request: Any) -> Connection:
        return self._conns.pop(id(request))

    def shutdown_request(self, request: Any) -> None:
        self._conns.pop(id(request), None)
        super().shutdown_request(request)
