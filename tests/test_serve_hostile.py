"""``rtseg serve`` under hostile peers (garbage, giant PDUs, 100 idle sockets, slow senders, aborted associations)
and broken series (pixel data cut to a third, one slice of another size, a transfer syntax nothing decodes here):
the allowed sender keeps being answered and served, nothing broken is delivered, nothing stays held.

Hostile peers connect from other loopback addresses (127.0.0.2 and up: Linux routes all of 127/8 to lo), as
they would from other machines; the allowed sender (dcmtk) connects from 127.0.0.1."""
from __future__ import annotations

import select
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid
from pynetdicom import AE

from rtseg.cli import main as cli_main
from test_serve import ckpt, node_factory, tps  # noqa: F401  (fixtures)
from test_serve_support import copy_series, need_tools, processes, shared_series, storescu, wait_for

__all__ = ["processes", "node_factory", "ckpt", "tps"]


def echo_seconds(port: int, calling: str = "GOOD") -> float:
    """Seconds dcmtk echoscu took for a successful C-ECHO (fails the test if it did not succeed)."""
    t0 = time.monotonic()
    res = subprocess.run(["echoscu", "-to", "10", "-aet", calling, "-aec", "RTSEG", "127.0.0.1", str(port)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"C-ECHO failed: {res.stdout}{res.stderr}"
    return time.monotonic() - t0


def connect_from(source: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def rtstruct_series(ds: pydicom.Dataset) -> str:
    return str(ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
               .SeriesInstanceUID)


def series_uid(folder: Path) -> str:
    return str(pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID)


class Hostiles:
    """Everything hostile at once, from addresses other than the allowed sender's; ``close()`` ends it all."""

    def __init__(self, port: int, series: list[Path]) -> None:
        self.port, self.series = port, series
        self.socks: list[socket.socket] = []
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.giant_pdata_aborted = False

    def start(self) -> "Hostiles":
        rng = np.random.default_rng(7)
        for i in range(10):  # garbage: random bytes, never a valid first PDU
            s = connect_from("127.0.0.2", self.port)
            s.sendall(bytes([0x80 + i]) + rng.bytes(200))
            self.socks.append(s)
        for _ in range(5):  # an A-ASSOCIATE-RQ header announcing ~4 GiB
            s = connect_from("127.0.0.3", self.port)
            s.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFF0) + b"\0" * 1000)
            self.socks.append(s)
        for _ in range(60):  # idle from one address (per-address limit) ...
            self.socks.append(connect_from("127.0.0.4", self.port))
        for k in range(40):  # ... and from 40 addresses, one each (total limit: the oldest idle make room)
            self.socks.append(connect_from(f"127.0.1.{k + 1}", self.port))
        for fn in (self._slow_sender, self._giant_pdata, self._aborted_series):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _slow_sender(self) -> None:
        """A plausible A-ASSOCIATE-RQ header, then one byte every 0.5 s (three at once)."""
        socks = [connect_from("127.0.0.5", self.port) for _ in range(3)]
        self.socks += socks
        for s in socks:
            s.sendall(struct.pack(">BBL", 0x01, 0, 400))
        while not self.stop.wait(0.5):
            for s in socks:
                try:
                    s.send(b"\0")
                except OSError:
                    pass

    def _giant_pdata(self) -> None:
        """A real association from an allowed AE title, then a P-DATA-TF header announcing ~4 GiB."""
        ae = AE(ae_title="GOOD")
        ae.add_requested_context(CTImageStorage, [JPEG2000Lossless])
        assoc = ae.associate("127.0.0.1", self.port, ae_title="RTSEG", bind_address=("127.0.0.6", 0))
        if not assoc.is_established:
            return
        assoc.dul.socket.socket.sendall(struct.pack(">BBL", 0x04, 0, 0xFFFFFFF0) + b"\0" * 1000)
        end = time.monotonic() + 10
        while assoc.is_alive() and time.monotonic() < end:
            time.sleep(0.05)
        self.giant_pdata_aborted = not assoc.is_established
        if assoc.is_alive():
            assoc.abort()

    def _aborted_series(self) -> None:
        """Five instances of a series, then A-ABORT (the series must fail as incomplete, never be contoured)."""
        ae = AE(ae_title="GOOD")
        ae.add_requested_context(CTImageStorage, [JPEG2000Lossless])
        assoc = ae.associate("127.0.0.1", self.port, ae_title="RTSEG", bind_address=("127.0.0.7", 0))
        if assoc.is_established:
            for f in sorted(self.series[0].glob("*.dcm"))[:5]:
                assoc.send_c_store(pydicom.dcmread(f))
            assoc.abort()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(20)
        for s in self.socks:
            s.close()


@pytest.mark.slow
def test_hostile_peers_do_not_stop_an_allowed_sender(node_factory, tps, tmp_path: Path) -> None:
    need_tools("echoscu", "storescu")
    src = shared_series()
    aborted, during, after = (copy_series(src, tmp_path / n) for n in ("aborted", "during", "after"))
    node = node_factory(destination=[tps.destination], allow=["GOOD"], first_pdu_timeout=2.0, idle_timeout=5.0)
    hostiles = Hostiles(node.port, [aborted]).start()
    try:
        time.sleep(0.5)
        seconds = [echo_seconds(node.port) for _ in range(5)]
        assert max(seconds) < 2.0, seconds
        storescu(node.port, during, calling="GOOD")  # a whole series while all of it is going on
        seconds.append(echo_seconds(node.port))
        time.sleep(3.0)  # the idle and slow ones run out of first_pdu_timeout meanwhile; new ones still come
        seconds.append(echo_seconds(node.port))
        assert max(seconds) < 2.0, seconds
        for t in hostiles.threads:
            t.join(20)
        assert hostiles.giant_pdata_aborted
    finally:
        hostiles.close()
    # afterwards nothing is held: no connection, no association
    wait_for(lambda: node.node.scp.connections.count() == 0 and not node.node.scp.ae.active_associations, 15,
             "every connection and association to be released")
    assert echo_seconds(node.port) < 2.0
    storescu(node.port, after, calling="GOOD")
    wait_for(lambda: sorted(s for _, s, _ in node.states()).count("done") == 2, 120, "both good series to be done")
    time.sleep(1.5)  # a second delivery would show by now
    got = tps.received()
    assert sorted(rtstruct_series(ds) for ds in got) == sorted([series_uid(during), series_uid(after)])
    states = {j[1]: j[2] for j in node.states() if j[1] != "done"}
    assert list(states) == ["failed"] and "aborted" in states["failed"] and "5 instance(s) received" in states["failed"]
    reasons = " | ".join(e.get("reason", "") for e in node.log() if e["event"] in ("connection dropped",
                                                                                 "connection refused"))
    for words in ("first PDU is not an A-ASSOCIATE-RQ", "A-ASSOCIATE-RQ announces 4294967280 bytes",
                  "more than the 16382 negotiated/allowed", "no A-ASSOCIATE-RQ within first_pdu_timeout=2 s",
                  "A-ASSOCIATE-RQ not complete within first_pdu_timeout=2 s", "max_associations_per_address",
                  "made room for a new connection"):
        assert words in reasons, words


def broken_series(src: Path, out: Path, how: str) -> Path:
    """A copy of the series (new UIDs) with slice 7 damaged: ``truncated`` (uncompressed pixel data cut to a third),
    ``truncated_j2k`` (its JPEG 2000 stream cut to a third), ``other_size`` (256x256 among 512x512), ``mpeg2``
    (every slice JPEG lossless by dcmtk's dcmcjpeg, then labelled MPEG2 video: a syntax no installed decoder reads)."""
    out.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k, f in enumerate(sorted(src.glob("*.dcm"))):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if how == "truncated_j2k":
            if k == 7:
                frame0 = next(generate_frames(ds.PixelData, number_of_frames=1))
                ds.PixelData = encapsulate([frame0[: len(frame0) // 3]])
        else:
            px = ds.pixel_array
            if how == "other_size" and k == 7:
                px = np.ascontiguousarray(px[::2, ::2])
                ds.Rows, ds.Columns = px.shape
            ds.PixelData = px.tobytes()
            if how == "truncated" and k == 7:
                ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(out / f.name, enforce_file_format=True)
    if how == "mpeg2":
        for f in sorted(out.glob("*.dcm")):
            subprocess.run(["dcmcjpeg", str(f), str(f)], check=True, capture_output=True, timeout=60)
            ds = pydicom.dcmread(f)
            ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
            ds.save_as(f)
    return out


def send(port: int, folder: Path, syntax_flag: str) -> None:
    res = subprocess.run(["storescu", syntax_flag, "-aet", "GOOD", "-aec", "RTSEG", "+sd", "127.0.0.1", str(port),
                          str(folder)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_broken_series_fail_with_the_reason_and_block_nothing(node_factory, tps, tmp_path: Path, capsys) -> None:
    need_tools("echoscu", "storescu", "dcmcjpeg")
    src = shared_series()
    cases = [("truncated", "-xv", "pixel data truncated: 174762 of 524288 bytes"),
             ("other_size", "-xv", "slices have mixed sizes (rows x columns): 512x512 (19 slices), 256x256 (1 slice)"),
             ("mpeg2", "-xm", "transfer syntax MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100) cannot be decoded"),
             ("truncated_j2k", "-xv", "pixel data cannot be decoded")]
    folders = [broken_series(src, tmp_path / how, how) for how, _, _ in cases]
    good = copy_series(src, tmp_path / "good")
    node = node_factory(destination=[tps.destination], allow=["GOOD"])
    for folder, (_, flag, _) in zip(folders, cases):
        send(node.port, folder, flag)
        assert echo_seconds(node.port) < 2.0
    send(node.port, good, "-xv")  # queued behind the broken ones: the worker must get to it
    seconds = []
    while not [s for _, s, _ in node.states()] == ["failed"] * 4 + ["done"]:
        seconds.append(echo_seconds(node.port))
        assert len(seconds) < 200, node.states()
        time.sleep(0.2)
    assert max(seconds, default=0.0) < 2.0
    time.sleep(1.0)
    got = tps.received()
    assert [rtstruct_series(ds) for ds in got] == [series_uid(good)]  # nothing broken delivered
    assert not any(p.name.startswith(f"job{i:06d}") for p in (node.cfg.store_path / "outbox").iterdir()
                   for i in range(1, 5))
    assert cli_main.main(["serve", "status", "--store", str(node.cfg.store_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    for line, (how, _, words) in zip(table[1:], cases):
        assert " failed " in line and words in line, (how, line)
    assert "damaged series: 1 of 20 instance(s)" in table[1] and "damaged series: 20 of 20" in table[3]
    assert " done " in table[5]


def test_first_pdu_timer_and_limits_free_every_slot(node_factory) -> None:
    """Quick (non-slow) check of the accounting: idle sockets beyond the per-address limit are refused at once,
    the rest closed after first_pdu_timeout; then the table and pynetdicom's association list are empty."""
    need_tools("echoscu")
    node = node_factory(allow=["GOOD"], first_pdu_timeout=1.0, max_associations=8, max_associations_per_address=3)
    socks = [connect_from("127.0.0.2", node.port) for _ in range(5)]
    try:
        t0 = time.monotonic()
        closed: dict[int, float] = {}
        while len(closed) < len(socks) and time.monotonic() - t0 < 5:  # each is closed by the node
            ready, _, _ = select.select([s for i, s in enumerate(socks) if i not in closed], [], [], 0.05)
            for s in ready:
                try:
                    assert s.recv(10) == b""
                except ConnectionResetError:
                    pass
                closed[socks.index(s)] = time.monotonic() - t0
        times = sorted(closed.values())
        assert len(times) == 5, closed
        assert times[1] < 0.5 and 0.9 < times[2] and times[-1] < 3.0, times  # 2 refused at once, 3 timed out
        assert echo_seconds(node.port) < 2.0
        wait_for(lambda: node.node.scp.connections.count() == 0 and not node.node.scp.ae.active_associations, 5,
                 "every slot to be free")
    finally:
        for s in socks:
            s.close()


def test_tls_clients_that_never_handshake_do_not_block_the_listener(node_factory, tmp_path: Path) -> None:
    """pynetdicom alone runs the TLS handshake in the accepting thread: one silent client stops every other."""
    need_tools("openssl")
    from test_serve_config import _self_signed

    cert, key = _self_signed(tmp_path)
    node = node_factory(tls_cert=str(cert), tls_key=str(key), first_pdu_timeout=1.0)
    silent = [connect_from("127.0.0.2", node.port) for _ in range(3)]
    try:
        ae = AE(ae_title="SCANNER1")
        ae.add_requested_context("1.2.840.10008.1.1")
        ae.acse_timeout = ae.network_timeout = 5
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        ctx.check_hostname = False
        t0 = time.monotonic()
        assoc = ae.associate("127.0.0.1", node.port, ae_title="RTSEG", tls_args=(ctx, None))
        assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
        assoc.release()
        assert time.monotonic() - t0 < 2.0
        wait_for(lambda: node.node.scp.connections.count() == 0, 5, "the silent TLS clients to be closed")
        assert any("TLS handshake" in e.get("reason", "") for e in node.log() if e["event"] == "connection dropped")
    finally:
        for s in silent:
            s.close()
