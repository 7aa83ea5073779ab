"""Command-line plumbing shared by the scripts: the parser, options generated from dataclasses, output guards
and locks, and user-error reporting. No torch here, so scripts that do not need it start fast."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import errno
import fcntl
import functools
import os
import signal
import sys
import threading
import time
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from errors import DataError

# ----------------------------------------------------------------------------------------------------------
# Errors and the parser


DERIVED_NAME_ROOM = 40  # bytes the scripts add to an output's name (".NAME.log.jsonl.PID.RANDOM.tmp")
INTERRUPT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal, as shells report it
KEPT_AS_WRITTEN = "every file already written is complete; run the same command again for the rest"


class Interrupted(Exception):
    """SIGTERM (a scheduler's stop, `kill`), raised where the program is, like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def os_error_line(err: OSError) -> str:
    """One line for a fault of the machine (full disk, a file gone, no permission), naming the file."""
    where = err.filename or err.filename2
    what = err.strerror or str(err)
    note = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.ENAMETOOLONG: "choose a shorter name"}.get(err.errno)
    return (f"{where}: " if where else "") + what + (f" ({note})" if note else "")


def report_user_errors(main: Callable[..., int] | None = None, *, kept: str = KEPT_AS_WRITTEN) -> Callable[..., int]:
    """Decorator for a script's main(): a DataError or a fault of the machine (OSError) becomes one line on stderr
    and exit status 1; Ctrl-C or SIGTERM one line saying what was `kept` and how to go on, exit 130 or 143; a
    closed pipe on stdout (`script | head`) ends the script quietly, its files already written."""
    if main is None:
        return functools.partial(report_user_errors, kept=kept)

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        previous = _on_sigterm()
        try:
            return main(*args, **kwargs)
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        except (KeyboardInterrupt, Interrupted) as stop:
            signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
            print(f"interrupted ({signal.Signals(signum).name}): {kept}", file=sys.stderr)
            return INTERRUPT_STATUS[signum]
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
            return 1
        except OSError as err:
            print(f"error: {os_error_line(err)}; {kept}", file=sys.stderr)
            return 1
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def _on_sigterm():
    """Make SIGTERM raise Interrupted for the run (main thread only); returns the handler it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        raise Interrupted(signum)

    return signal.signal(signal.SIGTERM, stop)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and every option's default in its help (unless the help names it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.default == argparse.SUPPRESS or not action.option_strings or action.required
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        if action.default is None:
            return f"{text} (default: none)"
        if action.default is False:
            return f"{text} (default: off)"
        return f"{text} (default: {_shown(action.default)})"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit status 1, like every other refusal."""

    def __init__(self, description: str | None = None, **kwargs):
        super().__init__(description=description, formatter_class=HelpFormatter, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(1)

    def parse_args(self, args: Sequence[str] | None = None, namespace=None):
        """As argparse's, but a misspelt option is named as unknown before any 'required' complaint it causes."""
        given = sys.argv[1:] if args is None else list(args)
        for token in given[:given.index("--")] if "--" in given else given:
            name = token.split("=", 1)[0]
            known = self._option_string_actions
            if name.startswith("--") and len(name) > 2 and not any(o.startswith(name) for o in known):
                close = difflib.get_close_matches(name, list(self._option_string_actions), n=1)
                self.error(f"unknown option {name}" + (f"; did you mean {close[0]}?" if close else ""))
        return super().parse_args(given, namespace)


def at_least(minimum: float, kind: type = int) -> Callable[[str], Any]:
    """An argparse type that refuses values below `minimum`."""

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    convert.__name__ = kind.__name__
    return convert


# ----------------------------------------------------------------------------------------------------------
# Options declared once, as dataclass fields


def option(default: Any, help: str, *, minimum: float | None = None, choices: Sequence | None = None,
           flag: str | None = None, metavar: str | None = None) -> Any:
    """A dataclass field that is also a command-line option: its flag, type, default and help come from here."""
    metadata = {"help": help, "minimum": minimum, "choices": choices, "flag": flag, "metavar": metavar}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for a sequence default")
    return dataclasses.field(default=default, metadata={"option": metadata})


def _base_type(hint: Any) -> tuple[type, bool, bool]:
    """(element type, is a tuple, may be None) of a field's type hint."""
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True, optional
    return hint, False, optional


def option_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "option" in f.metadata]


def flag_of(name: str) -> str:
    """The flag of an option field: `--field-name`; a boolean one also has `--no-field-name`."""
    return "--" + name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                defaults: Mapping[str, Any] | None = None, skip: Iterable[str] = (),
                default_note: Callable[[str], str] | None = None, unset: bool = False) -> None:
    """One flag per option field of `cls` (`--field-name`), with its type, choices, limits and help.

    defaults: values that replace the dataclass defaults (e.g. retraining's); unset: every default is None, so
    options_from() can tell which flags were given (for presets); default_note: extra text for a field's help."""
    hints = typing.get_type_hints(cls)
    defaults = dict(defaults or {})
    for f in option_fields(cls):
        if f.name in skip:
            continue
        meta = f.metadata["option"]
        kind, is_tuple, _ = _base_type(hints[f.name])
        default = defaults.get(f.name, f.default)
        flag = meta["flag"] or flag_of(f.name)
        help_text = meta["help"] + (default_note(f.name) if default_note else "")
        kwargs: dict[str, Any] = {"dest": f.name, "help": help_text,
                                  "default": None if unset else (list(default) if is_tuple else default)}
        if unset and not default_note:
            kwargs["help"] += f" (default: {_shown(default)})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        kwargs["type"] = at_least(meta["minimum"], kind) if meta["minimum"] is not None else kind
        if meta["choices"] is not None:
            kwargs["choices"] = list(meta["choices"])
        if is_tuple:
            kwargs["nargs"] = "+"
        if meta["metavar"]:
            kwargs["metavar"] = meta["metavar"]
        parser.add_argument(flag, **kwargs)


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def options_from(args: argparse.Namespace, cls: type, base: Any | None = None, **fixed) -> Any:
    """An instance of `cls` from parsed flags: a flag left unset (None, with add_options(unset=True)) keeps the
    value of `base` (a preset), else the dataclass default; `fixed` sets fields that have no flag."""
    hints = typing.get_type_hints(cls)
    values = dict(fixed)
    for f in option_fields(cls):
        if f.name in values or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if value is None and base is not None:
            continue
        if value is not None and _base_type(hints[f.name])[1]:
            value = tuple(value)
        values[f.name] = value
    return dataclasses.replace(base, **values) if base is not None else cls(**values)


def add_labels_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--labels", nargs="+", default=None, metavar="FILE",
                        help="labels: CSV (File/clip_id + trait columns) or ChaLearn annotation .pkl; they override "
                             "trait columns of a combined table")


def add_device_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto picks CUDA when it is available")


# ----------------------------------------------------------------------------------------------------------
# Outputs: checked before any work, never an input, one run at a time


def same_path(a: Path, b: Path) -> bool:
    """True when two paths name one file: the same resolved path, or the same inode (hard links)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_writable_file(path: Path) -> None:
    """Refuse, before any work, an output file that could not be written: an existing folder, a parent that is
    a file, a name too long for the file system once the scripts add their suffixes, or a place where no file
    can be created. Creates the output's folder when missing."""
    check_name_length(path)
    if path.is_dir():
        raise DataError(path, "is a folder; name a file to write")
    check_writable_folder(path.parent)


def check_name_length(path: Path) -> None:
    existing = next((p for p in [path.parent, *path.parent.parents] if p.is_dir()), Path("."))
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    length = len(os.fsencode(path.name))
    if length + DERIVED_NAME_ROOM > limit:
        raise DataError(path, f"the file name is too long for this file system ({length} bytes; at most "
                              f"{limit - DERIVED_NAME_ROOM} here, as the scripts add suffixes to it)")


def check_writable_folder(folder: Path) -> None:
    """Refuse an output folder that is a file or cannot be written; create it when missing."""
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.is_dir():
            raise DataError(folder, f"cannot be created: {parent} is a file")
        if parent.exists():
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe.{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise DataError(folder, f"cannot write here: {err.strerror or err}") from None


def check_outputs(outputs: Sequence[Path], inputs: Iterable[Path]) -> None:
    """Every output must be writable, distinct from the others and from every input file of the run."""
    inputs = [Path(p) for p in inputs]
    for k, out in enumerate(outputs):
        for other in outputs[:k]:
            if same_path(out, other):
                raise DataError(out, f"is named for two outputs ({other}); give each its own name")
        for source in inputs:
            if same_path(out, source):
                raise DataError(out, f"is an input of this run ({source}); refusing to overwrite it, choose "
                                     "another output")
        check_writable_file(out)


def lock_path(output: Path) -> Path:
    return output.with_name(output.name + ".lock")


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold an exclusive lock on `output` for the run (OUTPUT.lock, released by the system even on kill -9).
    A second run on the same output refuses with one line naming the holder."""
    lock = lock_path(output)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise DataError(output, f"another run is writing it ({holder}); wait for it to finish or "
                                        "choose another output") from None
            raise DataError(output, f"cannot lock {lock}: {err.strerror}") from None
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break  # the lock file we hold is still the one on disk
        except FileNotFoundError:
            pass
        os.close(fd)  # the previous holder removed it while we opened it: try again
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


@contextlib.contextmanager
def output_locks(outputs: Sequence[Path]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for out in outputs:
            stack.enter_context(output_lock(out))
        yield
