"""``rtseg serve`` configuration, routing, the job queue's rules, TLS, and back to the caller."""
from __future__ import annotations

import ssl
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from rtseg.cli import main as cli_main
from rtseg.errors import ConfigError
from rtseg.serve.config import FLAG_KEYS, ServeConfig, load_serve_config
from rtseg.serve.jobs import InstanceInfo, JobQueue
from rtseg.serve.routing import SeriesAttributes, route
from rtseg.serve.sender import backoff
from test_serve import ckpt, node_factory  # noqa: F401  (fixtures)
from test_serve_support import StoreSCP, need_tools, processes, shared_series, storescu, wait_for

__all__ = ["processes", "node_factory", "ckpt"]


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_yaml_and_flags_validate_with_file_and_key_in_errors(tmp_path: Path) -> None:
    cfg_file = write_yaml(tmp_path / "serve.yml", {"store": "s", "checkpoint": "a.pt", "port": 104,
                                                    "destination": ["TPS@10.0.0.2:104"]})
    cfg = load_serve_config(cfg_file, {"port": 11113, "allow": ["SCANNER1"]})
    assert cfg.port == 11113 and cfg.allow == ["SCANNER1"] and cfg.destination == ["TPS@10.0.0.2:104"]
    with pytest.raises(ConfigError, match=r"serve\.yml: series_timout: unknown key; did you mean series_timeout\?"):
        load_serve_config(write_yaml(tmp_path / "serve.yml", {"store": "s", "checkpoint": "a.pt",
                                                              "series_timout": 3}), {})
    with pytest.raises(ConfigError, match=r"destination: .*expected AE@host:port"):
        load_serve_config(None, {"store": "s", "checkpoint": "a.pt", "destination": ["TPS:104"]})
    with pytest.raises(ConfigError, match=r"rules\.0\.match\.series_description: .*regular expression"):
        load_serve_config(write_yaml(tmp_path / "r.yml", {"store": "s", "rules": [
            {"name": "x", "checkpoint": "a.pt", "match": {"series_description": "(unclosed"}}]}), {})
    with pytest.raises(ConfigError, match="caller_port"):
        load_serve_config(None, {"store": "s", "checkpoint": "a.pt", "destination": ["caller"]})
    with pytest.raises(ConfigError, match="give a checkpoint"):
        load_serve_config(None, {"store": "s"})


def test_every_key_but_rules_is_a_flag_with_help(capsys) -> None:
    assert set(FLAG_KEYS) == set(ServeConfig.model_fields) - {"rules"}
    with pytest.raises(SystemExit):
        cli_main.main(["serve", "--help"])
    out = capsys.readouterr().out
    for key in FLAG_KEYS:
        assert "--" + key.replace("_", "-") in out


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    rc = cli_main.main(["serve", "--store", str(tmp_path), "--checkpoint", str(tmp_path / "missing.pt"),
                        "--port", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.pt" in err and len(err.strip().splitlines()) == 1
    rc = cli_main.main(["serve", "status", "--store", str(tmp_path / "nothing")])
    assert rc == 2 and "no job database" in capsys.readouterr().err


def test_routing_first_matching_rule_wins() -> None:
    cfg = ServeConfig.model_validate({"store": "s", "rules": [
        {"name": "pelvis", "checkpoint": "p.pt", "match": {"modality": ["CT"], "body_part": ["pelvis"]}},
        {"name": "thorax", "checkpoint": "t.pt", "match": {"series_description": "(?i)thorax|body"}},
        {"name": "from-sim", "checkpoint": "s.pt", "match": {"calling_ae": ["CTSIM"]}}]})
    rules = cfg.effective_rules()
    assert route(rules, SeriesAttributes("SCANNER1", "CT", "PELVIS", "")).name == "pelvis"
    assert route(rules, SeriesAttributes("SCANNER1", "CT", "CHEST", "CT Body 3.0")).name == "thorax"
    assert route(rules, SeriesAttributes("CTSIM", "CT", "HEAD", "")).name == "from-sim"
    assert route(rules, SeriesAttributes("SCANNER1", "CT", "HEAD", "brain")) is None


def test_queue_stores_a_resent_instance_once_and_recovers_after_a_crash(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "jobs.sqlite")
    info = InstanceInfo("1.2.3.1", "1.2.3", "S1#abc", "CT", "", "")
    j1, dup1 = q.add_instance(info, tmp_path / "a.dcm", 10, "SCANNER1", "127.0.0.1")
    j2, dup2 = q.add_instance(info, tmp_path / "a.dcm", 10, "SCANNER1", "127.0.0.1")
    assert (j1, dup1, dup2) == (j2, False, True) and q.stored_bytes() == 10 and q.series_count("1.2.3") == 1
    q.set_complete(j1, "default", "a.pt")
    assert q.claim()["id"] == j1 and q.claim() is None
    q.close()
    q = JobQueue(tmp_path / "jobs.sqlite")  # as after kill -9 during contouring
    assert q.recover()["contouring"] == 1 and q.job(j1)["state"] == "complete"
    q.contoured(j1, tmp_path / "rt.dcm", {"read": 1.0}, ["TPS@127.0.0.1:104", "PACS@127.0.0.1:105"])
    d1, d2 = q.due_deliveries()
    assert not q.delivered(d1.id) and q.job(j1)["state"] == "sending"
    q.retry_later(d2.id, "down", 60)
    assert q.due_deliveries() == []
    assert backoff(0, 2, 300) == 2 and backoff(3, 2, 300) == 16 and backoff(20, 2, 300) == 300
    q.close()


def test_unrouted_series_is_kept_and_reported(node_factory, tmp_path: Path, ckpt: Path) -> None:
    series = shared_series()
    cfg = write_yaml(tmp_path / "serve.yml", {"rules": [
        {"name": "pelvis", "checkpoint": str(ckpt), "match": {"body_part": ["PELVIS"]}}]})
    node = node_factory(config=cfg)
    storescu(node.port, series)
    jobs = wait_for(lambda: [j for j in node.states() if j[1] == "unrouted"], 30, "the series to be unrouted")
    assert "no routing rule matches" in jobs[0][2] and "PARTIALBODY" in jobs[0][2]
    assert len(list((node.cfg.store_path / "series").rglob("*.dcm"))) == 20


def test_rtstruct_goes_back_to_the_caller(node_factory, tmp_path: Path, processes: list) -> None:
    need_tools("storescp", "storescu", "echoscu")
    caller = StoreSCP(tmp_path / "caller", ae_title="SCANNER1").start()
    processes.append(caller)
    node = node_factory(destination=["caller"], caller_port=caller.port, allow=["SCANNER1"])
    storescu(node.port, shared_series())
    wait_for(lambda: [s for _, s, _ in node.states()] == ["done"], 120, "the job to be done")
    assert [ds.Modality for ds in caller.received()] == ["RTSTRUCT"]


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_echo_through_pynetdicom_ssl_context(node_factory, tmp_path: Path) -> None:
    need_tools("openssl")
    cert, key = _self_signed(tmp_path)
    node = node_factory(tls_cert=str(cert), tls_key=str(key))
    ae = AE(ae_title="SCANNER1")
    ae.add_requested_context(Verification)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    ctx.check_hostname = False
    assoc = ae.associate("127.0.0.1", node.port, ae_title="RTSEG", tls_args=(ctx, None))
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    plain = AE(ae_title="SCANNER1")
    plain.add_requested_context(Verification)
    plain.acse_timeout = plain.network_timeout = 3
    assoc = plain.associate("127.0.0.1", node.port, ae_title="RTSEG")
    assert not assoc.is_established  # no TLS, no association
    time.sleep(0.2)


def test_port_in_use_is_a_one_line_error(node_factory, tmp_path: Path, ckpt: Path, capsys) -> None:
    node = node_factory()
    rc = cli_main.main(["serve", "--store", str(tmp_path / "other"), "--checkpoint", str(ckpt), "--device", "cpu",
                        "--port", str(node.port)])
    err = capsys.readouterr().err
    assert rc == 2 and f"cannot listen on 127.0.0.1:{node.port}" in err and "Traceback" not in err
