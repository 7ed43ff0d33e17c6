"""``rtseg serve`` configuration: one YAML file, every top-level key also a command-line flag.

Validated like the training config (pydantic, unknown keys refused, errors
name the file and key). ``rules`` is the only key without a flag: from flags
alone, ``--checkpoint`` and ``--destination`` make the one catch-all rule.
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rtseg.config.loader import format_validation_error
from rtseg.errors import ConfigError
from rtseg.inference.outputs import resolve_formats
from rtseg.config.yamlfile import read_yaml_mapping
from rtseg.review.gate import DEFAULT_POLICY, POLICIES, POLICY_HELP
from rtseg.serve.destinations import CALLER, destination_syntax, parse_destination


def _check_ae_title(value: str) -> str:
    if not 1 <= len(value.strip()) <= 16 or "\\" in value:
        raise ValueError(f"AE title {value!r} must be 1-16 characters without backslash")
    return value.strip()


def _check_destinations(values: list[str]) -> list[str]:
    for v in values:
        if v != CALLER:
            try:
                parse_destination(v)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
    return values


DEFAULT_FORMATS = ("rtstruct",)


def _check_formats(values: Optional[list[str]]) -> Optional[list[str]]:
    if values is None:
        return None
    try:
        return [f.name for f in resolve_formats(values)]
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PeerLimits(_Strict):
    """What one peer, or all together, may hold of the node (docs/SERVE.md, "Limits and timeouts")."""

    first_pdu_timeout: float = Field(5.0, gt=0, le=120, description="seconds a new connection has to complete its "
                                     "association request (TLS handshake included) before it is closed (default 5)")
    idle_timeout: float = Field(60.0, gt=0, description="seconds an association may stay silent, and the most one PDU "
                                "may take to arrive once begun, before it is aborted (default 60)")
    max_associations: int = Field(32, ge=1, le=1000, description="open connections in total (default 32); when "
                                  "full, the oldest one that has not negotiated yet is closed for a new one")
    max_associations_per_address: int = Field(16, ge=1, le=1000, description="open connections from one client "
                                              "address (default 16); more are closed at once")


class Match(_Strict):
    """Conditions on a series; all given ones must hold (absent = any)."""

    calling_ae: Optional[list[str]] = Field(None, description="calling AE titles")
    modality: Optional[list[str]] = Field(None, description="Modality values, e.g. [CT]")
    body_part: Optional[list[str]] = Field(None, description="BodyPartExamined values (case-insensitive)")
    series_description: Optional[str] = Field(None, description="regular expression searched in SeriesDescription")

    @field_validator("series_description")
    @classmethod
    def _regex(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from None
        return v


class Rule(_Strict):
    """Which checkpoint contours a matching series and where its RTSTRUCT goes."""

    name: str
    match: Match = Field(default_factory=Match)
    checkpoint: str
    destinations: list[str] = Field(default_factory=list, description=f"{destination_syntax()} or '{CALLER}'")
    formats: Annotated[list[str], AfterValidator(_check_formats)] = Field(
        default_factory=lambda: list(DEFAULT_FORMATS), description="output formats")
    roi_names: Optional[str] = Field(None, description="ROI name mapping file (JSON/YAML, class -> ROI name)")

    @field_validator("destinations")
    @classmethod
    def _dest(cls, v: list[str]) -> list[str]:
        return _check_destinations(v)


class ServeConfig(PeerLimits):
    """Every key but ``rules`` is also a flag (``ae_title`` -> ``--ae-title``)."""

    store: str = Field(..., description="folder for received series, the job database, the outbox and the log")
    host: str = Field("127.0.0.1", description="address to listen on (default 127.0.0.1: this machine only)")
    port: int = Field(11112, ge=0, le=65535, description="TCP port to listen on (default 11112; 0: any free port)")
    ae_title: str = Field("RTSEG", description="this node's AE title (default RTSEG)")
    checkpoint: Optional[str] = Field(None, description="checkpoint of the catch-all rule (used when no rules are given)")
    destination: list[str] = Field(default_factory=list, description=f"where the catch-all rule sends its outputs: "
                                   f"{destination_syntax()} or '{CALLER}', repeatable")
    format: Annotated[Optional[list[str]], AfterValidator(_check_formats)] = Field(None, description="outputs of the catch-all rule, repeatable (rtseg predict's "
                                        "--format names; default rtstruct)")
    roi_names: Optional[str] = Field(None, description="ROI name mapping file of the catch-all rule (as rtseg "
                                     "predict --roi-names)")
    caller_port: Optional[int] = Field(None, ge=1, le=65535, description="port of the caller's storage SCP, for "
                                       f"destination '{CALLER}'")
    allow: list[str] = Field(default_factory=list, description="calling AE titles allowed to connect, repeatable "
                             "(none given: any AE title, with a warning)")
    allow_address: list[str] = Field(default_factory=list, description="client addresses or networks allowed, e.g. "
                                     "10.1.2.0/24, repeatable (none given: any)")
    series_timeout: float = Field(10.0, gt=0, description="seconds without a new instance after which a series is "
                                  "complete (default 10)")
    complete_on_release: bool = Field(False, description="a series is also complete when its association is released")
    qa_policy: str = Field(DEFAULT_POLICY, description=POLICY_HELP + "; held jobs wait for 'rtseg serve release JOB'")
    workers: int = Field(1, ge=1, le=16, description="contouring workers, each with its own copy of the model")
    device: str = Field("auto", description="auto, cpu or cuda[:N] (default auto)")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="what the network computes in: auto "
                                                      "(bf16 on a GPU and on CPUs with native bf16, else fp32), bf16 or fp32 "
                                                      "(as rtseg predict --precision)")
    quota_mb: Optional[float] = Field(None, gt=0, description="storage quota for received instances in MB; when "
                                      "full, C-STORE answers 'out of resources'")
    max_instance_mb: float = Field(64.0, gt=0, description="largest accepted instance in MB (default 64)")
    max_instances_per_series: int = Field(3000, ge=1, description="most instances accepted per series (default 3000)")
    retry_initial_s: float = Field(2.0, gt=0, description="first wait before resending to a destination (doubles)")
    retry_max_s: float = Field(300.0, gt=0, description="longest wait between sending attempts")
    tls_cert: Optional[str] = Field(None, description="PEM certificate: listen with TLS (needs tls_key)")
    tls_key: Optional[str] = Field(None, description="PEM private key of tls_cert")
    tls_ca: Optional[str] = Field(None, description="PEM CA bundle: require and verify client certificates")
    drift_window: int = Field(10, ge=1, description="audit: cases in the rolling median of an organ's surface Dice "
                              "(2 mm) for the drift alarm (default 10; docs/AUDIT.md)")
    drift_margin: float = Field(0.05, ge=0, lt=1, description="audit: drift alarm when the rolling median falls below "
                                "the baseline minus this (default 0.05)")
    drift_baseline: Optional[str] = Field(None, description="audit: commissioning baseline (an edits.csv or JSON "
                                          "{organ: median surface Dice}); default: each organ's first drift_window cases")
    rules: list[Rule] = Field(default_factory=list, description="routing rules, first match wins (YAML only)")
    adapt_patients: Optional[str] = Field(None, description="folder of 'rtseg adapt prepare' patient directories: a CT "
                                          "whose hashed PatientID has one there is contoured by adapt (docs/ADAPT.md)")

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, v: str) -> str:
        return _check_ae_title(v)

    @field_validator("destination")
    @classmethod
    def _dest(cls, v: list[str]) -> list[str]:
        return _check_destinations(v)

    @field_validator("qa_policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if v not in POLICIES:
            raise ValueError(f"{v!r}: expected one of {', '.join(POLICIES)}")
        return v

    @field_validator("allow")
    @classmethod
    def _allow(cls, v: list[str]) -> list[str]:
        return [_check_ae_title(a) for a in v]

    @field_validator("allow_address")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for a in v:
            try:
                ipaddress.ip_network(a, strict=False)
            except ValueError:
                raise ValueError(f"{a!r} is not an IP address or network (e.g. 10.1.2.3 or 10.1.2.0/24)") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "ServeConfig":
        if not self.rules and not self.checkpoint:
            raise ValueError("give a checkpoint (--checkpoint) or routing rules (rules:)")
        if self.rules and (self.checkpoint or self.destination or self.format or self.roi_names):
            raise ValueError("checkpoint/destination/format/roi_names make the catch-all rule; with rules, put them "
                             "in a rule")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_ca and not self.tls_cert:
            raise ValueError("tls_ca needs tls_cert and tls_key")
        uses_caller = any(CALLER in r.destinations for r in self.effective_rules())
        if uses_caller and self.caller_port is None:
            raise ValueError(f"destination '{CALLER}' needs caller_port (the port of the caller's storage SCP)")
        return self

    def effective_rules(self) -> list[Rule]:
        """The rules, or the catch-all rule made of ``checkpoint`` and ``destination``."""
        if self.rules:
            return list(self.rules)
        return [Rule(name="default", checkpoint=str(self.checkpoint), destinations=list(self.destination),
                     formats=list(self.format or DEFAULT_FORMATS), roi_names=self.roi_names)]

    @property
    def store_path(self) -> Path:
        return Path(self.store)


FLAG_KEYS: tuple[str, ...] = tuple(sorted((k for k in ServeConfig.model_fields if k != "rules"),
                                          key=lambda k: k in PeerLimits.model_fields))  # the limits last in --help


def load_serve_config(path: Optional[str | Path], flags: dict[str, Any]) -> ServeConfig:
    """YAML file (optional) overlaid with the flags that were given (``None`` = not given)."""
    data: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        data = read_yaml_mapping(path)
        source = str(Path(path))
    given = {k: v for k, v in flags.items() if v is not None and not (isinstance(v, list) and not v)}
    unknown = sorted(set(given) - set(FLAG_KEYS))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown}")
    data.update(given)
    if given and path is not None:
        source = f"{source} (with command-line flags)"
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, err, ServeConfig)) from None
