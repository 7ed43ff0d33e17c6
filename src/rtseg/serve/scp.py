"""The DICOM Storage SCP (pynetdicom): C-ECHO, and C-STORE of CT (CT, Enhanced CT and Legacy Converted Enhanced
CT Image Storage) in any transfer syntax pynetdicom knows (JPEG Lossless, JPEG-LS, JPEG 2000, RLE, deflate, big
endian among them); RT Structure Set Storage too: the clinic's approved sets, handled by
:mod:`rtseg.serve.feedback`.

Receiving only writes the instance's bytes as they came (no decoding, no
inference) and one row in the queue, so a sender is never kept waiting by a
model. Other SOP classes get no presentation context (the sender's C-STORE
is refused at negotiation); the limits (quota, instance size, instances per
series) answer ``0xA700 Out of resources``; the calling AE title and,
optionally, the client address must be on the allow-lists.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
from typing import Any, Optional

from pydicom.uid import RTStructureSetStorage
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from rtseg.errors import ConfigError
from rtseg.io.dicom.frames import CT_STORAGE_CLASSES
from rtseg.serve.assembly import SeriesStore
from rtseg.serve.config import ServeConfig
from rtseg.serve.integrity import instance_problem
from rtseg.serve.jobs import InstanceInfo, JobQueue
from rtseg.serve.logs import event, series_ref
from rtseg.serve.peers import Connections, Guard, GuardedServer

OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
SOP_CLASS_NOT_SUPPORTED = 0x0122


def tls_context(cfg: ServeConfig) -> Optional[ssl.SSLContext]:
    """Server-side TLS from PEM files; with ``tls_ca`` clients must present a certificate it signed."""
    if cfg.tls_cert is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    if cfg.tls_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cfg.tls_ca)
    return ctx


class _Session:
    """What one association stored and refused, per series (to heal or flag them when it ends)."""

    def __init__(self) -> None:
        self.stored: set[str] = set()
        self.refused: dict[str, str] = {}


class StorageSCP:
    def __init__(self, cfg: ServeConfig, queue: JobQueue, store: SeriesStore) -> None:
        self.cfg, self.queue, self.store = cfg, queue, store
        self._sessions: dict[int, _Session] = {}
        self._lock = threading.Lock()
        self._reserved = 0
        self.ae = AE(ae_title=cfg.ae_title)
        self.ae.maximum_associations = cfg.max_associations
        self.ae.acse_timeout = cfg.first_pdu_timeout  # also bounds a rejected peer that does not close
        self.ae.network_timeout = cfg.idle_timeout
        self.connections = Connections(cfg.max_associations, cfg.max_associations_per_address)
        self.ae.add_supported_context(Verification)
        for sop_class in CT_STORAGE_CLASSES:
            self.ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        self.ae.add_supported_context(RTStructureSetStorage, ALL_TRANSFER_SYNTAXES)
        self.feedback: Any = None  # serve.feedback.Feedback: the clinic's structure sets (docs/AUDIT.md)
        self.ae.require_calling_aet = list(cfg.allow)
        self.server: Optional[GuardedServer] = None
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> tuple[str, int]:
        handlers = [(evt.EVT_C_ECHO, lambda e: 0x0000), (evt.EVT_C_STORE, self.on_store),
                    (evt.EVT_ESTABLISHED, self.on_established), (evt.EVT_RELEASED, self.on_released),
                    (evt.EVT_ABORTED, self.on_aborted), (evt.EVT_REJECTED, self.on_rejected)]
        server_class = type("Server", (GuardedServer,), {
            "allowed": [ipaddress.ip_network(a, strict=False) for a in self.cfg.allow_address],
            "guard": Guard(self.cfg.first_pdu_timeout, self.cfg.idle_timeout), "connections": self.connections})
        try:
            self.server = self.ae.make_server((self.cfg.host, self.cfg.port), evt_handlers=handlers,
                                              ssl_context=tls_context(self.cfg), server_class=server_class)
        except ssl.SSLError as exc:
            raise ConfigError(f"tls_cert/tls_key/tls_ca: cannot load the TLS files ({exc.reason or exc})") from None
        except OSError as exc:
            raise ConfigError(f"host/port: cannot listen on {self.cfg.host}:{self.cfg.port} "
                              f"({exc.strerror or exc}); is another node running there?") from None
        self.ae._servers.append(self.server)  # so AE.shutdown() finds it, as for start_server()
        self._thread = threading.Thread(target=self.server.serve_forever, name="rtseg-scp", daemon=True)
        self._thread.start()
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def stop(self, wait_s: float = 10.0) -> None:
        """No new associations; the instance being received is finished, then open associations are aborted."""
        if self.server is None:
            return
        self.server.shutdown()
        self.server = None
        self.connections.close_all("node stopping")
        for assoc in list(self.ae.active_associations):
            assoc.abort()
        for assoc in list(self.ae.active_associations):
            assoc.join(timeout=wait_s)

    # ------------------------------------------------------------------ association events

    def _session(self, assoc: Any) -> _Session:
        with self._lock:
            return self._sessions.setdefault(id(assoc), _Session())

    def _end(self, assoc: Any) -> _Session:
        with self._lock:
            return self._sessions.pop(id(assoc), _Session())

    def on_established(self, e: Any) -> None:
        r = e.assoc.requestor
        event(logging.INFO, "association accepted", calling_ae=r.ae_title, peer=r.address)

    def on_rejected(self, e: Any) -> None:
        r = e.assoc.requestor
        event(logging.WARNING, "association rejected", calling_ae=r.ae_title, peer=r.address,
              reason="calling AE title not in allow list")

    def on_released(self, e: Any) -> None:
        s = self._end(e.assoc)
        self.queue.mark_released(s.stored - set(s.refused))
        for uid, reason in s.refused.items():
            self.queue.mark_interrupted([uid], reason)

    def on_aborted(self, e: Any) -> None:
        s = self._end(e.assoc)
        if s.stored or s.refused:
            r = e.assoc.requestor
            self.queue.mark_interrupted(s.stored | set(s.refused),
                                        f"association from {r.ae_title} aborted before the series was sent completely")
            event(logging.WARNING, "association aborted", calling_ae=r.ae_title, peer=r.address,
                  series=sorted(series_ref(u) for u in s.stored | set(s.refused)))

    # ------------------------------------------------------------------ C-STORE

    def _refuse(self, session: _Session, series_uid: str, reason: str, status: int = OUT_OF_RESOURCES) -> int:
        session.refused[series_uid] = reason
        self.queue.mark_interrupted([series_uid], reason)
        event(logging.WARNING, "instance refused", series=series_ref(series_uid), status=f"0x{status:04X}", reason=reason)
        return status

    def _reserve(self, size: int) -> Optional[str]:
        """Claim quota for an instance about to be written; the reason if it does not fit."""
        if self.cfg.quota_mb is None:
            return None
        with self._lock:
            used = self.queue.stored_bytes() + self._reserved
            if used + size > self.cfg.quota_mb * 1e6:
                return f"storage quota of {self.cfg.quota_mb:g} MB is full ({used / 1e6:.1f} MB used)"
            self._reserved += size
        return None

    def _release(self, size: int) -> None:
        if self.cfg.quota_mb is not None:
            with self._lock:
                self._reserved -= size

    def on_store(self, e: Any) -> int:
        session = self._session(e.assoc)
        if e.context.abstract_syntax == RTStructureSetStorage and self.feedback is not None:
            return int(self.feedback.on_store(e))
        if e.context.abstract_syntax not in CT_STORAGE_CLASSES:
            return SOP_CLASS_NOT_SUPPORTED
        ds = e.dataset
        sop_uid, series_uid = str(ds.get("SOPInstanceUID", "") or ""), str(ds.get("SeriesInstanceUID", "") or "")
        if not sop_uid or not series_uid:
            event(logging.WARNING, "instance refused", status=f"0x{DATASET_DOES_NOT_MATCH:04X}",
                  reason="SOPInstanceUID or SeriesInstanceUID empty")
            return DATASET_DOES_NOT_MATCH
        ref = series_ref(series_uid, ds.get("SeriesNumber"))
        info = InstanceInfo(sop_uid, series_uid, ref, str(ds.get("Modality", "") or ""),
                            str(ds.get("BodyPartExamined", "") or ""), str(ds.get("SeriesDescription", "") or ""))
        requestor = e.assoc.requestor
        if self.queue.has_instance(sop_uid):  # a re-sent instance: stored once
            self.queue.add_instance(info, self.store.instance_path(series_uid, sop_uid), 0, requestor.ae_title,
                                    requestor.address)
            session.stored.add(series_uid)
            return 0x0000
        if self.queue.series_count(series_uid) >= self.cfg.max_instances_per_series:
            return self._refuse(session, series_uid,
                                f"more than max_instances_per_series={self.cfg.max_instances_per_series} instances")
        data = e.encoded_dataset(include_meta=True)
        if len(data) > self.cfg.max_instance_mb * 1e6:
            return self._refuse(session, series_uid, f"instance of {len(data) / 1e6:.1f} MB exceeds "
                                f"max_instance_mb={self.cfg.max_instance_mb:g}")
        full = self._reserve(len(data))
        if full:
            return self._refuse(session, series_uid, full)
        problem = instance_problem(ds, e.context.transfer_syntax)
        try:
            path = self.store.write(series_uid, sop_uid, data)
            job_id, _ = self.queue.add_instance(info, path, len(data), requestor.ae_title, requestor.address)
            if problem:
                self.queue.add_problem(job_id, sop_uid, str(ds.get("InstanceNumber", "") or ""), problem)
                event(logging.WARNING, "instance damaged", job=job_id, series=ref, reason=problem)
        except OSError as exc:
            return self._refuse(session, series_uid, f"cannot store the instance ({exc.strerror or exc})")
        finally:
            self._release(len(data))
        session.stored.add(series_uid)
        return 0x0000


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
