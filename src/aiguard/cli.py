"""The ``aiguard`` command: edit the control file every replica reads, and look at features.

    aiguard kill FEATURE --reason "wrong answers" [--by ana]
    aiguard revive FEATURE
    aiguard kill --all --reason "provider outage"      # every AI path
    aiguard rollout FEATURE 25                         # percent
    aiguard rollout check FEATURE                      # do the current stage's gates pass?
    aiguard status                                     # features, state, recent figures
    aiguard report [--feature F] [--since 7d] [--by model] [--html report.html]
                   [--json report.json]
    aiguard export --feature F --format jsonl [--output data.jsonl] [--since 30d]
    aiguard tune FEATURE --target "precision >= 0.95" [--since 30d] [--model M] [--apply]
    aiguard check [FEATURE] [--since 7d] [--verbose]   # exit 1 when a target fails
    aiguard report --check ...                         # the report, then the check

``--control PATH`` (or ``AIGUARD_CONTROL``; default ``./aiguard-control.toml``) names the control
file; ``--store PATH`` (or ``AIGUARD_STORE``) the store with the recorded figures; ``--config
PATH`` (or ``AIGUARD_CONFIG``) a config file whose feature targets the report and ``check`` check.
Exit status: 0 done (or gates and targets pass), 1 gates or targets fail (or ``tune --apply``
has no threshold to apply), 2 usage or input error.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _control_edit
from ._engine.settings import ALL
from ._runtime.state import STORE_ENV
from .control import ControlState, FeatureControl, default_control_path
from .exceptions import AiguardError, ConfigError
from .limits import StageFigures, summed
from .rollout import check_percent
from .store import Store, open_store

if TYPE_CHECKING:
    from .config import FeatureConfig


class _Fail(Exception):
    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aiguard", description="Control aiguard features across every replica."
    )
    p.add_argument(
        "--control",
        help="control file, or redis://host:port/db (default: $AIGUARD_CONTROL or "
        "./aiguard-control.toml)",
    )
    p.add_argument("--store", help=f"store with recorded figures (default: ${STORE_ENV})")
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("kill", help="switch a feature's AI path off")
    k.add_argument("feature", nargs="?")
    k.add_argument("--all", action="store_true", help="every AI path (a global kill)")
    k.add_argument("--reason", required=True)
    k.add_argument("--by", default=None, help="who (default: the current user)")
    r = sub.add_parser("revive", help="switch a feature's AI path back on")
    r.add_argument("feature", nargs="?")
    r.add_argument("--all", action="store_true", help="lift the global kill")
    ro = sub.add_parser(
        "rollout", help="set a rollout percentage (FEATURE PERCENT) or check gates (check FEATURE)"
    )
    ro.add_argument("words", nargs=2, metavar="ARG")
    ro.add_argument(
        "--percent",
        type=float,
        help="with check: the stage to judge (default: the control file's, else the highest)",
    )
    sub.add_parser("status", help="features, their state and recent figures")
    rp = sub.add_parser("report", help="figures from call records and feedback, with targets")
    rp.add_argument("--feature")
    rp.add_argument("--since", help="e.g. 7d, 24h, or an ISO date")
    rp.add_argument(
        "--by", action="append", help="split by model, source, arm, reason or an attribute"
    )
    rp.add_argument("--html", help="also write a self-contained HTML report here")
    rp.add_argument("--json", help="also write the report as JSON here")
    rp.add_argument("--config", help="config file with feature targets ($AIGUARD_CONFIG)")
    rp.add_argument(
        "--check", action="store_true", help="then check the targets (exit 1 on a fail)"
    )
    rp.add_argument("--verbose", action="store_true", help="with --check: passing targets too")
    tu = sub.add_parser("tune", help="recommend a confidence threshold that meets a target")
    tu.add_argument("feature")
    tu.add_argument("--target", default="precision >= 0.95", help='e.g. "precision >= 0.95"')
    tu.add_argument("--since", help="e.g. 30d, or an ISO date")
    tu.add_argument("--model", help="one model's calls only")
    tu.add_argument("--apply", action="store_true", help="write it to the control source")
    tu.add_argument("--config", help="config file with the feature's threshold ($AIGUARD_CONFIG)")
    ck = sub.add_parser("check", help="check every feature's targets (exit 1 when one fails)")
    ck.add_argument("feature", nargs="?")
    ck.add_argument("--since", help="e.g. 7d, or an ISO date")
    ck.add_argument("--config", help="config file with feature targets ($AIGUARD_CONFIG)")
    ck.add_argument("--verbose", action="store_true", help="passing targets too")
    ex = sub.add_parser("export", help="a retraining / evaluation dataset")
    ex.add_argument("--feature", required=True)
    ex.add_argument("--format", default="jsonl", choices=["jsonl"])
    ex.add_argument("--since", help="e.g. 30d, or an ISO date")
    ex.add_argument("--output", help="file to write (default: standard output)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aiguard`` command.

    Example:
        >>> import pathlib, tempfile
        >>> from aiguard.cli import main
        >>> path = str(pathlib.Path(tempfile.mkdtemp()) / "control.toml")
        >>> main(["--control", path, "rollout", "triage", "25"])
        triage: rollout 25% (control file ...control.toml)
        0
    """
    args = _parser().parse_args(argv)
    path = default_control_path(args.control)
    try:
        if args.command == "kill":
            return _kill(path, _target(args), args.reason, args.by or _user())
        if args.command == "revive":
            return _revive(path, _target(args))
        if args.command == "rollout":
            first, second = args.words
            if first == "check":
                return _check(path, second, _store(args.store), args.percent)
            return _rollout(path, first, second)
        if args.command == "report":
            return _report(args)
        if args.command == "export":
            return _export(args)
        if args.command == "tune":
            return _tune(path, args)
        if args.command == "check":
            return _check_targets(path, args, _needed_store(args.store, "check"))
        return _status(path, _store(args.store))
    except _Fail as exc:
        print(f"aiguard: {exc}", file=sys.stderr)
        return exc.code
    except AiguardError as exc:
        print(f"aiguard: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. a Redis or PostgreSQL server that does not answer
        if type(exc).__module__.split(".")[0] not in ("redis", "psycopg", "psycopg_pool"):
            raise
        print(f"aiguard: {_label(path)}: {exc}", file=sys.stderr)
        return 2


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:
        return None


def _target(args: argparse.Namespace) -> str:
    if args.all == bool(args.feature):
        raise _Fail(f"{args.command}: give a FEATURE or --all (not both)")
    return ALL if args.all else str(args.feature)


def _label(path: Path) -> str:
    return _control_edit.label(path)


def _load(path: Path) -> ControlState:
    return _control_edit.load(path)  # a missing file is an empty state; ConfigError names it


def _edit(path: Path, feature: str, **changes: Any) -> None:
    _control_edit.edit(path, feature, **changes)


def _name(feature: str) -> str:
    return "every feature" if feature == ALL else feature


def _kill(path: Path, feature: str, reason: str, by: str | None) -> int:
    if not reason.strip():
        raise _Fail(f"feature {_name(feature)!r}: --reason must say why ({_label(path)})")
    _edit(path, feature, killed=True, reason=reason, by=by)
    print(f"{_name(feature)}: killed ({reason}) ({_label(path)})")
    return 0


def _revive(path: Path, feature: str) -> int:
    _edit(path, feature, killed=False, reason=None, by=None)
    print(f"{_name(feature)}: revived ({_label(path)})")
    return 0


def _rollout(path: Path, feature: str, value: str) -> int:
    try:
        number = float(value.rstrip("%"))
    except ValueError:
        raise _Fail(
            f"feature {feature!r}: rollout {value!r} is invalid: must be a number in [0, 100] "
            f"({_label(path)})"
        ) from None
    try:
        percent = check_percent("rollout", number)
    except ConfigError as exc:
        raise _Fail(
            f"feature {feature!r}: rollout {value!r} is invalid: {str(exc).split(': ', 1)[-1]} "
            f"({_label(path)})"
        ) from None
    _edit(path, feature, rollout=percent)
    print(f"{feature}: rollout {percent:g}% ({_label(path)})")
    return 0


def _store(explicit: str | None) -> Store | None:
    spec = explicit or os.environ.get(STORE_ENV)
    return None if not spec else open_store(spec)


def _figures(store: Store, feature: str, percent: float | None) -> StageFigures | None:
    read = getattr(store, "stage_figures", None)
    rows = read(feature) if read is not None else []
    if not rows:
        return None
    if percent is None:
        percent = max(r.percent for r in rows)  # no percentage said: the highest recorded
    return summed([r for r in rows if r.percent == percent])


def _check(path: Path, feature: str, store: Store | None, percent: float | None) -> int:
    if store is None:
        raise _Fail(f"feature {feature!r}: rollout check needs the store: --store or ${STORE_ENV}")
    fc = _load(path).features.get(feature)
    if percent is None and fc is not None:
        percent = fc.rollout
    figures = _figures(store, feature, percent)
    if figures is None or figures.calls == 0:
        where = f" at {percent:g}%" if percent is not None else ""
        raise _Fail(f"feature {feature!r}: no recorded calls{where} in the store")
    print(_describe(figures))
    if figures.gate is None:
        raise _Fail(f"feature {feature!r}: no gate declared at {figures.percent:g}%")
    why = figures.breach()
    if why is not None:
        print(f"FAIL: {why}")
        return 1
    if figures.calls < figures.gate.min_calls:
        print(f"FAIL: {figures.calls} calls, fewer than min_calls={figures.gate.min_calls}")
        return 1
    print("PASS: the gates hold at this stage")
    return 0


def _describe(f: StageFigures) -> str:
    def pct(n: int) -> str:
        return f"{100 * n / f.calls:.1f}%" if f.calls else "-"

    return (
        f"{f.feature} at {f.percent:g}%: {f.calls} calls, errors {pct(f.errors)}, timeouts "
        f"{pct(f.timeouts)}, low confidence {pct(f.low_confidence)}, fallbacks {pct(f.fallbacks)}"
    )


def _status(path: Path, store: Store | None) -> int:
    control = _load(path)
    names = set(control.features)
    read = getattr(store, "stage_figures", None)
    if read is not None:
        names |= {r.feature for r in read(None)}
    rows = [("FEATURE", "STATE", "ROLLOUT", "THRESHOLD", "CALLS", "ERRORS", "FALLBACKS")]
    for name in sorted(names):
        fc = control.features.get(name, FeatureControl())
        if control.all.killed:
            st = f"killed (all): {control.all.reason or ''}".strip()
        elif fc.killed:
            st = f"killed: {fc.reason or ''}".strip()
        else:
            st = "live"
        figures = _figures(store, name, fc.rollout) if store is not None else None
        calls = errors = fallbacks = "-"
        if figures is not None and figures.calls:
            calls = str(figures.calls)
            errors = f"{100 * figures.errors / figures.calls:.1f}%"
            fallbacks = f"{100 * figures.fallbacks / figures.calls:.1f}%"
        rollout = "-" if fc.rollout is None else f"{fc.rollout:g}%"
        threshold = "-" if fc.threshold is None else f"{fc.threshold:g}"
        rows.append((name, st, rollout, threshold, calls, errors, fallbacks))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if len(rows) == 1:
        print(f"(no features in control file {path!s}{' or store' if store else ''})")
    return 0


def _needed_store(explicit: str | None, what: str) -> Store:
    store = _store(explicit)
    if store is None:
        raise _Fail(f"{what} needs the store with the call records: --store or ${STORE_ENV}")
    return store


def _features(explicit: str | None) -> dict[str, FeatureConfig] | None:
    """The features of the config file (``--config`` or $AIGUARD_CONFIG), or None."""
    from .config import load_config

    config_path = explicit or os.environ.get("AIGUARD_CONFIG")
    return None if not config_path else dict(load_config(config_path).features)


def _report(args: argparse.Namespace) -> int:
    from .report import report

    store = _needed_store(args.store, "report")
    features = _features(args.config)
    targets = {name: list(fc.targets) for name, fc in (features or {}).items()}
    result = report(
        args.feature,
        since=args.since,
        by=args.by or ("source", "arm"),
        store=store,
        targets=targets or None,
    )
    print(result.to_text())
    if args.html:
        Path(args.html).write_text(result.to_html(), encoding="utf-8")
        print(f"HTML report written to {args.html}")
    if args.json:
        Path(args.json).write_text(result.to_json(), encoding="utf-8")
        print(f"JSON report written to {args.json}")
    if args.check:
        return _check_targets(default_control_path(args.control), args, store, args.feature)
    return 0


def _check_targets(
    path: Path, args: argparse.Namespace, store: Store, feature: str | None = None
) -> int:
    from .check import check

    features = _features(args.config)
    if features is None:
        raise _Fail("check needs the feature targets: --config or $AIGUARD_CONFIG")
    name = feature if feature is not None else getattr(args, "feature", None)
    if name is not None and name not in features:
        raise _Fail(f"feature {name!r} is not in the config file")
    result = check(name, since=args.since, store=store, features=features, control=path)
    print(result.to_text(verbose=args.verbose))
    return 0 if result.ok else 1


def _tune(path: Path, args: argparse.Namespace) -> int:
    from .tuning import tune

    store = _needed_store(args.store, "tune")
    current = _load(path).features.get(args.feature, FeatureControl()).threshold
    if current is None:
        cfg = (_features(args.config) or {}).get(args.feature)
        current = None if cfg is None else cfg.threshold
    result = tune(
        args.feature,
        args.target,
        since=args.since,
        model=args.model,
        store=store,
        current=current,
    )
    print(result.table())
    if not args.apply:
        return 0
    if result.threshold is None:
        print(f"not applied: no threshold meets {result.target}", file=sys.stderr)
        return 1
    _edit(path, args.feature, threshold=result.threshold)
    print(f"{args.feature}: threshold {result.threshold:.2f} ({_label(path)})")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export

    store = _needed_store(args.store, "export")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            written, skipped = export(store, args.feature, out, since=args.since)
    else:
        written, skipped = export(store, args.feature, sys.stdout, since=args.since)
    note = f" ({skipped} calls without captured inputs left out)" if skipped else ""
    print(f"{written} examples exported for {args.feature}{note}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
