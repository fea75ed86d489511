"""The ``aiguard`` command: edit the control source every replica reads, and look at features.

    aiguard kill FEATURE --reason "wrong answers" [--by ana]
    aiguard revive FEATURE [--reason TEXT]
    aiguard kill --all --reason "provider outage"      # every AI path
    aiguard rollout FEATURE 25                         # percent; `none`: back to the code
    aiguard rollout check FEATURE                      # do the current stage's gates pass?
    aiguard threshold FEATURE 0.8                      # `none`: back to the code
    aiguard history [FEATURE] [--limit N] [--json]     # who changed what, when and why
    aiguard status [--since 24h]                       # features, state, recent figures
    aiguard report [--feature F] [--since 7d] [--by model] [--html report.html]
                   [--json report.json]
    aiguard export --feature F --format jsonl [--output data.jsonl] [--since 30d]
    aiguard tune FEATURE --target "precision >= 0.95" [--since 30d] [--model M] [--apply]
    aiguard check [FEATURE] [--since 7d] [--verbose]   # exit 1 when a target fails
    aiguard card FEATURE [--html] [--json] [--since 30d] [--output card.html]
    aiguard report --check ...                         # the report, then the check
    aiguard --version

Options, before or after the command: ``--control PATH`` (or ``AIGUARD_CONTROL``; default
``./aiguard-control.toml``) names the control file, or a ``redis://`` URL; ``--prefix`` the
prefix of the Redis keys (default ``aiguard``); ``--store PATH`` (or ``AIGUARD_STORE``) the store
with the recorded figures, only ever read; ``--config PATH`` (or ``AIGUARD_CONFIG``) a config file
whose features and targets ``status``, the report and ``check`` use.
Exit status: 0 done (or gates and targets pass), 1 gates or targets fail (or ``tune --apply``
has no threshold to apply), 2 usage or input error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _cli_read, _control_edit, _history
from ._checks import check_feature
from ._engine.settings import ALL
from ._runtime.state import STORE_ENV
from ._version import __version__
from .control import ControlState, FeatureControl, default_control_path
from .exceptions import AiguardError, ConfigError
from .limits import StageFigures
from .rollout import check_percent
from .store import Store

if TYPE_CHECKING:
    from .config import FeatureConfig

CONFIG_ENV = "AIGUARD_CONFIG"
NONE_WORDS = ("none", "code")  # a value handed back to the code


class _Fail(Exception):
    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors end the command with exit status 2 (not SystemExit
    raised out of :func:`main`)."""

    def error(self, message: str) -> Any:
        raise _Fail(f"{self.format_usage()}{self.prog}: error: {message}")


def _common() -> argparse.ArgumentParser:
    """The options every command takes, before or after its name."""
    c = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS
    c.add_argument(
        "--control",
        default=s,
        help="control file, or redis://host:port/db (default: $AIGUARD_CONTROL or "
        "./aiguard-control.toml)",
    )
    c.add_argument("--prefix", default=s, help="prefix of the Redis keys (default: aiguard)")
    c.add_argument("--store", default=s, help=f"store with recorded figures (${STORE_ENV})")
    c.add_argument("--config", default=s, help=f"config file with feature settings (${CONFIG_ENV})")
    return c


def _editing(p: argparse.ArgumentParser, *, reason_required: bool = False) -> None:
    p.add_argument(
        "--reason",
        "--why",
        dest="reason",
        required=reason_required,
        help="why (recorded in the history)" + ("" if reason_required else "; optional"),
    )
    p.add_argument("--by", dest="who", default=None, help="who (default: the OS user)")


def _parser() -> argparse.ArgumentParser:
    common = _common()
    p = _Parser(
        prog="aiguard",
        description="Control aiguard features across every replica.",
        parents=[common],
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub: Any = p.add_subparsers(dest="command", parser_class=_Parser)

    def command(name: str, **kw: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, parents=[common], **kw)
        return parser

    k = command("kill", help="switch a feature's AI path off")
    k.add_argument("feature", nargs="?")
    k.add_argument("--all", action="store_true", help="every AI path (a global kill)")
    _editing(k, reason_required=True)
    r = command("revive", help="switch a feature's AI path back on")
    r.add_argument("feature", nargs="?")
    r.add_argument("--all", action="store_true", help="lift the global kill")
    _editing(r)
    ro = command(
        "rollout",
        help="set a rollout percentage (FEATURE PERCENT|none) or check gates (check FEATURE)",
    )
    ro.add_argument("words", nargs=2, metavar="ARG")
    ro.add_argument(
        "--percent",
        type=float,
        help="with check: the stage to judge (default: the control source's, else the highest)",
    )
    _editing(ro)
    th = command("threshold", help="set a confidence threshold (FEATURE VALUE|none)")
    th.add_argument("feature")
    th.add_argument("value")
    _editing(th)
    hi = command("history", help="who killed, revived, rolled out or set a threshold, when, why")
    hi.add_argument("feature", nargs="?")
    hi.add_argument("--limit", type=int, help="the latest N entries only")
    hi.add_argument("--json", action="store_true", help="JSON lines, one entry each")
    st = command("status", help="every feature, its state and recent figures")
    st.add_argument("--since", default="24h", help="figures from then on (default: 24h)")
    rp = command("report", help="figures from call records and feedback, with targets")
    rp.add_argument("--feature")
    rp.add_argument("--since", help="e.g. 7d, 24h, or an ISO date")
    rp.add_argument(
        "--by", action="append", help="split by model, source, arm, reason or an attribute"
    )
    rp.add_argument("--html", help="also write a self-contained HTML report here")
    rp.add_argument("--json", help="also write the report as JSON here")
    rp.add_argument(
        "--check", action="store_true", help="then check the targets (exit 1 on a fail)"
    )
    rp.add_argument("--verbose", action="store_true", help="with --check: passing targets too")
    tu = command("tune", help="recommend a confidence threshold that meets a target")
    tu.add_argument("feature")
    tu.add_argument("--target", default="precision >= 0.95", help='e.g. "precision >= 0.95"')
    tu.add_argument("--since", help="e.g. 30d, or an ISO date")
    tu.add_argument("--model", help="one model's calls only")
    tu.add_argument("--apply", action="store_true", help="write it to the control source")
    _editing(tu)
    ck = command("check", help="check every feature's targets (exit 1 when one fails)")
    ck.add_argument("feature", nargs="?")
    ck.add_argument("--since", help="e.g. 7d, or an ISO date")
    ck.add_argument("--verbose", action="store_true", help="passing targets too")
    cd = command("card", help="the feature's system card, from configuration and figures")
    cd.add_argument("feature")
    cd.add_argument("--html", action="store_true", help="an HTML page rather than text")
    cd.add_argument("--json", action="store_true", help="JSON rather than text")
    cd.add_argument("--since", help="figures from then on, e.g. 30d or an ISO date")
    cd.add_argument("--output", help="file to write (default: standard output)")
    ex = command("export", help="a retraining / evaluation dataset")
    ex.add_argument("--feature", required=True)
    ex.add_argument("--format", default="jsonl", choices=["jsonl"])
    ex.add_argument("--since", help="e.g. 30d, or an ISO date")
    ex.add_argument("--output", help="file to write (default: standard output)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aiguard`` command; returns the exit status.

    Example:
        >>> import pathlib, tempfile
        >>> from aiguard.cli import main
        >>> path = str(pathlib.Path(tempfile.mkdtemp()) / "control.toml")
        >>> main(["rollout", "triage", "25", "--control", path, "--by", "ana"])
        triage: rollout 25% (control file ...control.toml)
        0
    """
    parser = _parser()
    args: argparse.Namespace | None = None
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help
            return exc.code if isinstance(exc.code, int) else 0
        if args.version:
            print(f"aiguard {__version__}")
            return 0
        if args.command is None:
            raise _Fail("aiguard: give a command (aiguard --help lists them)")
        return _run(args)
    except _Fail as exc:
        text = str(exc)
        print(
            text if text.startswith(("aiguard", "usage:")) else f"aiguard: {text}", file=sys.stderr
        )
        return exc.code
    except AiguardError as exc:
        print(f"aiguard: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. a Redis or PostgreSQL server that does not answer
        if type(exc).__module__.split(".")[0] not in ("redis", "psycopg", "psycopg_pool"):
            raise
        where = "aiguard" if args is None else f"aiguard: {_label(_control(args))}"
        print(f"{where}: {exc}", file=sys.stderr)
        return 2


def _opt(args: argparse.Namespace, name: str) -> Any:
    return getattr(args, name, None)


def _control(args: argparse.Namespace) -> Path:
    return default_control_path(_opt(args, "control"))


def _prefix(args: argparse.Namespace) -> str:
    prefix = _opt(args, "prefix")
    if prefix is None:
        return "aiguard"
    if not prefix or prefix != prefix.strip() or any(c.isspace() for c in prefix):
        raise _Fail(f"--prefix {prefix!r} is invalid: a non-empty name without spaces")
    return str(prefix)


def _run(args: argparse.Namespace) -> int:
    path = _control(args)
    prefix = _prefix(args)
    if args.command == "kill":
        return _kill(args, path, prefix, _target(args))
    if args.command == "revive":
        return _revive(args, path, prefix, _target(args))
    if args.command == "rollout":
        first, second = args.words
        if _value_word(second) or first != "check":
            return _set(args, path, prefix, _feature(first), "rollout", second)
        return _check(path, prefix, _feature(second), _store(args), args.percent)
    if args.command == "threshold":
        return _set(args, path, prefix, _feature(args.feature), "threshold", args.value)
    if args.command == "history":
        return _history_cmd(args, path, prefix)
    if args.command == "report":
        return _report(args, path)
    if args.command == "export":
        return _export(args)
    if args.command == "card":
        return _card(args, path, prefix)
    if args.command == "tune":
        return _tune(args, path, prefix)
    if args.command == "check":
        feature = None if args.feature is None else _feature(args.feature)
        return _check_targets(path, args, _needed_store(args, "check"), feature)
    return _status(args, path, prefix)


def _feature(name: str) -> str:
    """A FEATURE argument, checked: exit 2 naming the value when it is not a feature name."""
    if name == ALL:
        raise _Fail(f"feature {name!r} is invalid: {ALL!r} is the global entry; use --all")
    try:
        return check_feature(name)
    except ConfigError as exc:
        raise _Fail(str(exc)) from None


def _target(args: argparse.Namespace) -> str:
    if args.all == (args.feature is not None):
        raise _Fail(f"{args.command}: give a FEATURE or --all (not both)")
    return ALL if args.all else _feature(str(args.feature))


def _label(where: Path) -> str:
    return _control_edit.label(where)


def _load(path: Path, prefix: str) -> ControlState:
    return _control_edit.load(path, prefix=prefix)  # a missing file is an empty state


def _name(feature: str) -> str:
    return "every feature" if feature == ALL else feature


def _edit(args: argparse.Namespace, path: Path, prefix: str, feature: str, **changes: Any) -> None:
    note = _control_edit.edit(
        path,
        feature,
        changes,
        prefix=prefix,
        by=args.who if args.who is not None else _history.user(),
        why=args.reason,
        via="cli",
    )
    if note:
        print(f"aiguard: {_label(path)}: {note}", file=sys.stderr)


def _kill(args: argparse.Namespace, path: Path, prefix: str, feature: str) -> int:
    reason = args.reason
    if not reason.strip():
        raise _Fail(f"feature {_name(feature)!r}: --reason must say why ({_label(path)})")
    who = args.who if args.who is not None else _history.user()
    _edit(args, path, prefix, feature, killed=True, reason=reason, by=who)
    print(f"{_name(feature)}: killed ({reason}) ({_label(path)})")
    return 0


def _revive(args: argparse.Namespace, path: Path, prefix: str, feature: str) -> int:
    _edit(args, path, prefix, feature, killed=False, reason=None, by=None)
    print(f"{_name(feature)}: revived ({_label(path)})")
    return 0


def _value_word(word: str) -> bool:
    """Whether ``word`` is a value (a number, or ``none``) rather than a feature name."""
    if word.strip().lower() in NONE_WORDS:
        return True
    try:
        float(word.strip().rstrip("%"))
    except ValueError:
        return False
    return True


def _set(
    args: argparse.Namespace, path: Path, prefix: str, feature: str, field: str, word: str
) -> int:
    """``rollout FEATURE PERCENT|none`` and ``threshold FEATURE VALUE|none``."""
    value: float | None = None
    if word.strip().lower() not in NONE_WORDS:
        value = _number(path, feature, field, word)
    _edit(args, path, prefix, feature, **{field: value})
    if value is None:
        shown = "none (the code's value applies)"
    else:
        shown = f"{value:g}%" if field == "rollout" else f"{value:g}"
    print(f"{feature}: {field} {shown} ({_label(path)})")
    return 0


def _number(path: Path, feature: str, field: str, word: str) -> float:
    rule = "a number in [0, 100], or none" if field == "rollout" else "a number in [0, 1], or none"
    bad = f"feature {feature!r}: {field} {word!r} is invalid: must be {rule} ({_label(path)})"
    text = word.strip()
    try:
        number = float(text.rstrip("%") if field == "rollout" else text)
    except ValueError:
        raise _Fail(bad) from None
    if field == "rollout":
        try:
            return check_percent("rollout", number)
        except ConfigError:
            raise _Fail(bad) from None
    if not 0.0 <= number <= 1.0:
        raise _Fail(bad)
    return number


# -- reading --------------------------------------------------------------------------------------


def _store(args: argparse.Namespace) -> Store | None:
    spec = _opt(args, "store") or os.environ.get(STORE_ENV)
    return None if not spec else _cli_read.open_for_reading(spec, env=STORE_ENV)


def _needed_store(args: argparse.Namespace, what: str) -> Store:
    store = _store(args)
    if store is None:
        raise _Fail(f"{what} needs the store with the call records: --store or ${STORE_ENV}")
    return store


def _check(
    path: Path, prefix: str, feature: str, store: Store | None, percent: float | None
) -> int:
    if store is None:
        raise _Fail(f"feature {feature!r}: rollout check needs the store: --store or ${STORE_ENV}")
    fc = _load(path, prefix).features.get(feature)
    if percent is None and fc is not None:
        percent = fc.rollout
    figures = _cli_read.stage_figures(store, feature, percent)
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


def _status(args: argparse.Namespace, path: Path, prefix: str) -> int:
    store = _store(args)
    control = _load(path, prefix)
    if not _control_edit.is_redis(path) and not path.exists():
        print(f"aiguard: {_label(path)} does not exist: no control state", file=sys.stderr)
    rows = _cli_read.status_rows(control, store, _features(args) or {}, args.since)
    if control.all.killed:
        print(f"every feature: killed: {control.all.reason or ''} ({_label(path)})".strip())
    print(_cli_read.table(rows))
    if len(rows) == 1:
        where = f"{_label(path)}{', store' if store is not None else ''}"
        print(f"(no features in {where}{' or config file' if _opt(args, 'config') else ''})")
    elif store is not None:
        print(
            f"(calls, errors and fallbacks since {args.since} ago, from the store's call records)"
        )
    return 0


def _history_cmd(args: argparse.Namespace, path: Path, prefix: str) -> int:
    feature = None if args.feature is None else _feature(args.feature)
    if args.limit is not None and args.limit < 1:
        raise _Fail(f"--limit {args.limit} is invalid: a positive number of entries")
    file = not _control_edit.is_redis(path)
    if file and not path.exists() and not _history.file_for(path).exists():
        raise _Fail(f"{_label(path)} does not exist, nor its history")
    changes = _history.about(_control_edit.history(path, prefix=prefix), feature)
    if args.limit is not None:
        changes = changes[-args.limit :]
    if not changes and not args.json:
        print(
            f"(no recorded changes{'' if feature is None else f' of {feature}'} in {_label(path)})"
        )
        return 0
    text = _cli_read.history_text(changes, as_json=args.json)
    if text:
        print(text)
    return 0


def _features(args: argparse.Namespace) -> dict[str, FeatureConfig] | None:
    """The features of the config file (``--config`` or $AIGUARD_CONFIG), or None."""
    from .config import load_config

    config_path = _opt(args, "config") or os.environ.get(CONFIG_ENV)
    if not config_path:
        return None
    if not Path(config_path).is_file():
        raise _Fail(f"config file {config_path!r} does not exist (--config or ${CONFIG_ENV})")
    return dict(load_config(config_path).features)


def _report(args: argparse.Namespace, path: Path) -> int:
    from .report import report

    store = _needed_store(args, "report")
    if args.feature is not None:
        _feature(args.feature)
    features = _features(args)
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
        return _check_targets(path, args, store, args.feature)
    return 0


def _check_targets(
    path: Path, args: argparse.Namespace, store: Store, feature: str | None = None
) -> int:
    from .check import check

    features = _features(args)
    if features is None:
        raise _Fail("check needs the feature targets: --config or $AIGUARD_CONFIG")
    if feature is not None and feature not in features:
        raise _Fail(f"feature {feature!r} is not in the config file")
    result = check(feature, since=args.since, store=store, features=features, control=path)
    print(result.to_text(verbose=args.verbose))
    return 0 if result.ok else 1


def _tune(args: argparse.Namespace, path: Path, prefix: str) -> int:
    from .tuning import tune

    feature = _feature(args.feature)
    store = _needed_store(args, "tune")
    current = _load(path, prefix).features.get(feature, FeatureControl()).threshold
    if current is None:
        cfg = (_features(args) or {}).get(feature)
        current = None if cfg is None else cfg.threshold
    result = tune(
        feature,
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
    if args.reason is None:
        args.reason = f"tune: {result.target}"
    _edit(args, path, prefix, feature, threshold=result.threshold)
    print(f"{feature}: threshold {result.threshold:.2f} ({_label(path)})")
    return 0


def _card(args: argparse.Namespace, path: Path, prefix: str) -> int:
    from .card import card

    feature = _feature(args.feature)
    if args.html and args.json:
        raise _Fail("card: give --html or --json, not both")
    store = _needed_store(args, "card")
    _features(args)  # the config file's canvas and targets (owner, value, limits, ...)
    result = card(feature, since=args.since, store=store, control=_load(path, prefix))
    text = result.to_html() if args.html else result.to_json() if args.json else result.to_text()
    if args.output:
        Path(args.output).write_text(text + ("" if args.html else "\n"), encoding="utf-8")
        print(f"system card of {feature} written to {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export

    feature = _feature(args.feature)
    store = _needed_store(args, "export")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            written, skipped = export(store, feature, out, since=args.since)
    else:
        written, skipped = export(store, feature, sys.stdout, since=args.since)
    note = f" ({skipped} calls without captured inputs left out)" if skipped else ""
    print(f"{written} examples exported for {feature}{note}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
