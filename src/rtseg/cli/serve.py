"""``rtseg serve``: run the DICOM node; ``rtseg serve status``: list its jobs."""
from __future__ import annotations

import argparse
import json
import typing
from typing import Any

from rtseg.cli.common import add_command

NAME = "serve"
HELP = "run a DICOM node that contours every CT series it receives and sends the RTSTRUCT back"
DESCRIPTION = (
    "A DICOM Storage SCP (C-ECHO, C-STORE of CT Image Storage). Each received series is assembled, "
    "routed to a checkpoint, contoured by a worker and its RTSTRUCT sent by C-STORE to the destinations, with "
    "retries. Jobs live in STORE/jobs.sqlite and survive restarts; events go to STORE/serve.log.jsonl. Keys come "
    "from --config and/or the flags below (flags win). 'rtseg serve status --store DIR' lists the jobs. "
    "The QA gate (--qa-policy) holds a series whose CT is unlike the model's training CTs: "
    "'rtseg serve release JOB' sends it (with its QA flags in the RTSTRUCT), 'rtseg serve reject JOB' never does; "
    "both are logged with who (--by NAME, else the OS user) and when. See docs/SERVE.md."
)


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per config key (``ae_title`` -> ``--ae-title``), help text from the schema: no key without a flag."""
    from rtseg.serve.config import FLAG_KEYS, ServeConfig

    for key in FLAG_KEYS:
        field = ServeConfig.model_fields[key]
        flag = "--" + key.replace("_", "-")
        help_text = field.description or key
        ann = field.annotation
        args = typing.get_args(ann)
        base = next((a for a in args if a is not type(None)), ann) if args else ann
        if typing.get_origin(ann) is list or typing.get_origin(base) is list:
            p.add_argument(flag, dest=key, action="append", default=None, metavar="VALUE", help=help_text)
        elif base is bool:
            p.add_argument(flag, dest=key, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            p.add_argument(flag, dest=key, type=base if base in (int, float) else str, default=None,
                           metavar={int: "N", float: "NUM"}.get(base, key.split("_")[-1].upper()), help=help_text)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, run, HELP, DESCRIPTION)
    p.add_argument("action", nargs="?", choices=("run", "status", "release", "reject", "promote"), default="run",
                   help="run (default): start the node; status: list the jobs in --store; release JOB / reject JOB: "
                   "decide on a job the QA gate held (release sends it, reject never does); promote CHECKPOINT: "
                   "contour with CHECKPOINT from now on (docs/AUDIT.md)")
    p.add_argument("target", nargs="?", default=None, metavar="JOB|CHECKPOINT",
                   help="release/reject: the job number (as 'rtseg serve status' lists it); promote: the checkpoint")
    p.add_argument("--by", default=None, metavar="NAME",
                   help="release/reject: who decides, kept with the job and in the log (default: the OS user)")
    p.add_argument("--rule", default="*", metavar="NAME", help="promote: only for this routing rule (default: every rule)")
    p.add_argument("--config", default=None, metavar="YML", help="YAML file with the keys below (and rules:)")
    p.add_argument("--json", action="store_true", help="status: one JSON object per job instead of a table")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="status: only the N most recent jobs")
    _add_config_flags(p)


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    from rtseg.serve.config import FLAG_KEYS

    return {k: getattr(args, k) for k in FLAG_KEYS}


def run(args: argparse.Namespace) -> int:
    from rtseg.errors import ConfigError

    if args.action != "run":
        store = args.store
        if store is None and args.config is not None:
            from rtseg.serve.config import load_serve_config

            store = load_serve_config(args.config, _flags(args)).store
        if store is None:
            raise ConfigError(f"{args.action} needs --store DIR (or --config naming the store)")
        args.job, args.promoted = _target(args)
        if args.action in ("release", "reject"):
            return _review(args, store)
    if args.action == "status":
        from rtseg.serve.status import format_table, job_rows

        jobs = job_rows(store, args.limit)
        if args.json:
            for j in jobs:
                print(json.dumps(j, default=str))
        else:
            print(format_table(jobs) if jobs else "no jobs yet")
            from rtseg.serve.feedback_loop import status_lines

            print("\n".join(status_lines(store, args.drift_window or 10, 0.05 if args.drift_margin is None else
                                          args.drift_margin, args.drift_baseline)))
        return 0
    if args.action == "promote":
        from pathlib import Path

        from rtseg.serve.models import promote

        if args.promoted is None:
            raise ConfigError("promote needs CHECKPOINT, e.g. rtseg serve promote new.pt --store STORE")
        version = promote(Path(store) / "jobs.sqlite", args.promoted, args.rule)
        print(f"promoted {args.promoted} (model {version}) for {'every rule' if args.rule == '*' else args.rule}; "
              "series routed from now on are contoured with it")
        return 0
    from rtseg.serve.config import load_serve_config
    from rtseg.serve.service import run_node

    cfg = load_serve_config(args.config, _flags(args))
    run_node(cfg)
    return 0


def _target(args: argparse.Namespace) -> tuple[int | None, str | None]:
    """The positional after the action: a job number for release/reject, a checkpoint for promote, else nothing."""
    from rtseg.errors import ConfigError

    target = args.target
    if args.action in ("release", "reject"):
        if target is None:
            return None, None
        if not str(target).isdigit():
            raise ConfigError(f"{args.action} {target}: expected a job number as 'rtseg serve status' lists it")
        return int(target), None
    if args.action == "promote":
        return None, target
    if target is not None:
        raise ConfigError(f"{args.action} takes no JOB or CHECKPOINT (got {target!r})")
    return None, None


def _review(args: argparse.Namespace, store: str) -> int:
    from rtseg.errors import ConfigError
    from rtseg.serve.hold import review_job

    if args.job is None:
        raise ConfigError(f"{args.action} needs a job number: rtseg serve {args.action} JOB --store DIR")
    job = review_job(store, args.job, args.action == "release", args.by)
    done = "released" if args.action == "release" else "rejected"
    print(f"job {args.job} {done} by {job['reviewed_by']}: now {job['state']}")
    return 0
