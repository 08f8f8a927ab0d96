"""The settings table: how one setting is declared, resolved, checked and documented.

Every setting of an app (``Settings``, :mod:`hackagent_otel._config`) and of the
bridge (``BridgeSettings``, :mod:`hackagent_otel.bridge._settings`) is one
:class:`Setting` row, declared on its dataclass field with :func:`setting`: its name
(the field's), its kind (how text becomes a value and which values are valid), its
environment variables, its command-line option, its default and a line of help. The
classes resolve from their rows, the bridge's command line is built from them, and the
README's settings tables are rendered from them (``tests/test_readme_settings.py``
holds the two together).

A row resolves in the OpenTelemetry order: the argument, then the specific env var,
then the generic one, then the default; a blank value counts as unset. An invalid
argument is always an error (``ValueError`` naming it). An invalid env value is an
error where a wrong guess would send data elsewhere or start a server other than the
one asked for (a protocol, a URL, a records mode, every bridge setting: the bridge then
exits 2 naming it); a row with ``on_invalid="warn"`` (a tuning number of an app) is
warned about and defaulted instead, as the SDK does with its own numeric settings, so a
typo never stops a pipeline.

Reads the environment it is given; touches nothing else, except that a state file's
default, when there is no home folder, is a folder of the user's own under the temporary
folder (:func:`state_file`). Imports nothing of ours.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

__all__ = [
    "BYTES",
    "COUNT",
    "COUNT_OR_ZERO",
    "PATH",
    "PORT",
    "SECONDS",
    "SECONDS_OR_ZERO",
    "TEXT",
    "URL",
    "WORDS",
    "Choice",
    "Kind",
    "Setting",
    "argument",
    "check",
    "http_url",
    "markdown_table",
    "path_of",
    "resolve",
    "rows",
    "setting",
    "state_file",
    "value_of",
]

T = TypeVar("T")
N = TypeVar("N")
Env = Mapping[str, str]

_log = logging.getLogger("hackagent_otel")

#: The ``dataclasses.field`` metadata key a row is kept under.
_ROW = "hackagent_otel.setting"
MIB = 1024 * 1024


class _NotParsed(ValueError):
    """Text that is not a value of the kind at all (``"soon"`` for a number)."""


class Kind(Generic[T]):
    """How text from an env var or a command line becomes a value, and which values
    are valid. The subclasses below are the only kinds there are."""

    #: What a value of this kind is, after "is not": ``"an integer"``.
    noun = "text"
    #: What the README adds after the env vars: ``"(seconds)"``.
    unit = ""
    #: The command line's placeholder for a value.
    metavar = "TEXT"

    def parse(self, text: str) -> T:
        """The value ``text`` (stripped, not blank) stands for; :class:`_NotParsed` if none."""
        raise NotImplementedError

    def argument(self, value: Any) -> T | None:
        """The value an argument stands for; ``None``: counted as not given (``None`` or
        blank text). :class:`_NotParsed` for text that is no value, or another type."""
        if not isinstance(value, str):
            raise _NotParsed(value)
        return self.parse(value.strip()) if value.strip() else None

    def problem(self, row: Setting[T], value: T) -> str | None:
        """Why ``value`` is not valid for ``row``, or ``None``."""
        return None

    def settled(self, row: Setting[T], value: T, named_by: str) -> T:
        """``value``, or what stands in for a value that is known but not supported here
        (with a warning naming ``named_by``, where it came from)."""
        return value

    def show(self, value: T) -> str:
        """A value as the README and ``--help`` show it."""
        return f"`{value}`"


class _Text(Kind[str]):
    def parse(self, text: str) -> str:
        return text


class _Url(Kind[str]):
    metavar = "URL"

    def parse(self, text: str) -> str:
        return text.rstrip("/")

    def problem(self, row: Setting[str], value: str) -> str | None:
        if value.startswith(("http://", "https://")):
            return None
        return f"{row.help} {value!r} must start with http:// or https://"


class _Path(Kind[Path]):
    metavar = "FILE"

    def parse(self, text: str) -> Path:
        try:
            return Path(text).expanduser()
        except RuntimeError:  # "~" with no home folder to expand it to
            raise _NotParsed(text) from None

    def argument(self, value: Any) -> Path | None:
        return Path(value).expanduser() if value else None


class _Words(Kind[tuple[str, ...]]):
    unit = "(comma-separated)"
    metavar = "WORDS"

    def parse(self, text: str) -> tuple[str, ...]:
        return tuple(word.strip() for word in text.split(",") if word.strip())

    def argument(self, value: Any) -> tuple[str, ...] | None:
        if isinstance(value, str):  # one word list as text, as in the env var
            return self.parse(value)
        return tuple(str(word).strip() for word in value)

    def show(self, value: tuple[str, ...]) -> str:
        return ", ".join(f"`{word}`" for word in value) if value else "none"


class Choice(Kind[str]):
    """One of ``choices``; compared lower-cased when ``lower``. A value of
    ``substitutes`` is a standard one this package cannot act on: it is replaced by the
    choice it maps to, with a warning, instead of being an error."""

    def __init__(
        self, *choices: str, lower: bool = True, substitutes: Mapping[str, str] | None = None
    ) -> None:
        self.choices = choices
        self.lower = lower
        self.substitutes = dict(substitutes or {})
        self.metavar = "{" + ",".join(choices) + "}"

    def parse(self, text: str) -> str:
        return text.lower() if self.lower else text

    def settled(self, row: Setting[str], value: str, named_by: str) -> str:
        stand_in = self.substitutes.get(value)
        if stand_in is None:
            return value
        _log.warning(
            "%s %r (from %s) is not supported here; using %r", row.help, value, named_by, stand_in
        )
        return stand_in

    def problem(self, row: Setting[str], value: str) -> str | None:
        if value in self.choices:
            return None
        return f"{row.help} {value!r} is not supported; use one of {self.choices}"


class _Number(Kind[N]):
    """A number: ``convert`` makes one from text, or from an argument of ``accepted``."""

    convert: Callable[[Any], N]
    accepted: tuple[type, ...]

    def parse(self, text: str) -> N:
        try:
            return self.convert(text)
        except ValueError:
            raise _NotParsed(text) from None

    def argument(self, value: Any) -> N | None:
        if isinstance(value, self.accepted) and not isinstance(value, bool):
            return self.convert(value)
        return super().argument(value)


class _Integer(_Number[int]):
    noun = "an integer"
    metavar = "N"
    convert = int
    accepted = (int,)

    def __init__(self, minimum: int) -> None:
        self.minimum = minimum

    def problem(self, row: Setting[int], value: int) -> str | None:
        if value >= self.minimum:
            return None
        return f"{row.name} must be at least {self.minimum}, not {value}"

    def show(self, value: int) -> str:
        return f"{value:,}"


class _Port(_Integer):
    metavar = "PORT"

    def problem(self, row: Setting[int], value: int) -> str | None:
        return None if 0 <= value <= 65535 else f"{row.name} {value} is not a TCP port"

    def show(self, value: int) -> str:
        return f"`{value}`"


class _Bytes(_Integer):
    unit = "(bytes)"
    metavar = "BYTES"

    def show(self, value: int) -> str:
        return f"{value // MIB} MiB" if value % MIB == 0 else f"{value:,} bytes"


class _Seconds(_Number[float]):
    noun = "a number"
    unit = "(seconds)"
    metavar = "SECONDS"
    convert = float
    accepted = (int, float)

    def __init__(self, *, zero: bool) -> None:
        self.zero = zero

    def problem(self, row: Setting[float], value: float) -> str | None:
        if math.isfinite(value) and (value > 0 or (self.zero and value == 0)):
            return None
        return f"{row.name} must be {'>= 0' if self.zero else 'positive'}, not {value}"

    def show(self, value: float) -> str:
        return f"{value:g} s"


TEXT: Kind[str] = _Text()
URL: Kind[str] = _Url()
PATH: Kind[Path] = _Path()
WORDS: Kind[tuple[str, ...]] = _Words()
#: A count of at least 1.
COUNT: Kind[int] = _Integer(1)
#: A count that may be 0.
COUNT_OR_ZERO: Kind[int] = _Integer(0)
PORT: Kind[int] = _Port(0)
BYTES: Kind[int] = _Bytes(1)
#: A duration of more than 0 seconds.
SECONDS: Kind[float] = _Seconds(zero=False)
#: A duration that may be 0 seconds.
SECONDS_OR_ZERO: Kind[float] = _Seconds(zero=True)


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One row of the table; :func:`setting` puts it on a dataclass field."""

    kind: Kind[T]
    #: The value when nothing is given, or a function of the env that gives it.
    default: T | Callable[[Env], T] | None
    #: One line: the README's "setting" column, ``--help`` and error messages use it.
    help: str
    #: Env vars, the specific one first, then the generic one.
    env: tuple[str, ...] = ()
    #: The bridge's command-line option (``None``: none; a secret never gets one, as a
    #: command line shows in ``ps``).
    flag: str | None = None
    #: Names the setting had before (env vars, and options starting ``--``): still read,
    #: after the current ones, with a warning naming the new one.
    old_names: tuple[str, ...] = ()
    #: What the README and ``--help`` show as the default, where the value says too
    #: little (a path made from the env, a default that depends on another setting).
    shown: str | None = None
    #: Words the README adds after the default.
    note: str = ""
    #: ``"warn"``: an invalid env value is logged and the default used (see the module).
    on_invalid: Literal["raise", "warn"] = "raise"
    #: Kept out of ``repr`` (tokens, keys).
    secret: bool = False
    #: Whether ``configure()`` takes it as an argument (app settings).
    configure_argument: bool = True
    #: The field's name (:func:`rows` fills it in from the field the row is on).
    name: str = ""

    def default_for(self, env: Env) -> T | None:
        """The default, made from ``env`` where it depends on it."""
        default = self.default
        return default(env) if callable(default) else default

    def shown_default(self) -> str:
        """The default as the README and ``--help`` show it."""
        if self.shown is not None:
            return self.shown
        default = self.default
        if default is None or callable(default):
            return "none"
        return self.kind.show(default)

    def env_names(self) -> tuple[str, ...]:
        """Every env var read, in order: the current ones, then the old names."""
        return self.env + tuple(n for n in self.old_names if not n.startswith("--"))

    def old_flags(self) -> tuple[str, ...]:
        """The options it had before, still accepted."""
        return tuple(n for n in self.old_names if n.startswith("--"))


def setting(row: Setting[Any]) -> Any:
    """The dataclass field for ``row``: its default, and the row kept in its metadata."""
    metadata = {_ROW: row}
    default = row.default
    if callable(default):
        env_default: Callable[[Env], Any] = default
        return dataclasses.field(
            default_factory=lambda: env_default(os.environ),
            metadata=metadata,
            repr=not row.secret,
        )
    return dataclasses.field(default=default, metadata=metadata, repr=not row.secret)


def rows(cls: type[Any]) -> tuple[Setting[Any], ...]:
    """The rows of a settings dataclass, in field order, each with its name."""
    found = []
    for field in dataclasses.fields(cls):
        row = field.metadata.get(_ROW)
        if row is not None:
            if row.name != field.name:
                row = dataclasses.replace(row, name=field.name)
            found.append(row)
    return tuple(found)


def resolve(
    cls: type[Any], given: Mapping[str, Any], env: Env | None = None
) -> dict[str, tuple[Any, str]]:
    """Every row of ``cls`` resolved: name -> (value, where it came from: ``"argument"``,
    an env var's name or ``"default"``). ``given`` holds the arguments (``None``: not
    given); one that names no row is a ``TypeError``."""
    env = os.environ if env is None else env
    table = {row.name: row for row in rows(cls)}
    unknown = set(given) - set(table)
    if unknown:
        raise TypeError(f"{cls.__name__} has no setting {', '.join(sorted(unknown))}")
    return {name: _resolve(row, given.get(name), env) for name, row in table.items()}


def value_of(row: Setting[T], given: Any = None, env: Env | None = None) -> T | None:
    """One row resolved on its own (a command that needs one setting, not all)."""
    return _resolve(row, given, os.environ if env is None else env)[0]


def path_of(row: Setting[Path], env: Env | None = None) -> Path:
    """A file's row resolved with no argument: its env vars, else its default path."""
    path = value_of(row, None, env)
    if path is None:
        raise ValueError(f"{row.help} has no default")
    return path


def argument(row: Setting[T], given: Any) -> T | None:
    """The value an argument (or a command-line option's text) gives ``row``; ``None``
    when it is not given (``None``, blank); ``ValueError`` naming it when invalid."""
    if given is None:
        return None
    try:
        value = row.kind.argument(given)
    except _NotParsed:
        raise ValueError(f"{row.name}={given!r} is not {row.kind.noun}") from None
    if value is not None:
        value = row.kind.settled(row, value, f"the argument {row.name}")
        problem = row.kind.problem(row, value)
        if problem is not None:
            raise ValueError(problem)
    return value


def _resolve(row: Setting[T], given: Any, env: Env) -> tuple[T | None, str]:
    value = argument(row, given)
    if value is not None:
        return value, "argument"
    for name in row.env_names():
        text = env.get(name, "").strip()
        if not text:
            continue
        if name in row.old_names:
            _log.warning("%s is the old name of %s; it is read for now", name, row.env[0])
        try:
            parsed = row.kind.parse(text)
        except _NotParsed:
            problem: str | None = f"{name}={text!r} is not {row.kind.noun}"
        else:
            parsed = row.kind.settled(row, parsed, name)
            problem = row.kind.problem(row, parsed)
            if problem is None:
                return parsed, name
            problem += f" (from {name})"
        if row.on_invalid == "raise":
            raise ValueError(problem)
        _log.warning("%s; using the default, %s", problem, row.shown_default())
        break
    return row.default_for(env), "default"


def check(settings: object) -> None:
    """Raise ``ValueError`` for the first field of ``settings`` its row finds invalid
    (for a dataclass built directly, not resolved)."""
    for row in rows(type(settings)):
        value = getattr(settings, row.name)
        if value is not None:
            problem = row.kind.problem(row, value)
            if problem is not None:
                raise ValueError(problem)


def http_url(text: str, named_by: str) -> str:
    """``text`` as an API root (no trailing slash); ``ValueError`` saying that
    ``named_by`` gave it, when it is not http(s)."""
    row: Setting[str] = Setting(URL, None, named_by)
    value = URL.parse(text.strip())
    problem = URL.problem(row, value)
    if problem is not None:
        raise ValueError(problem)
    return value


def state_file(name: str) -> Callable[[Env], Path]:
    """A default: ``name`` under ``${XDG_STATE_HOME:-~/.local/state}/hackagent-otel``."""

    def default(env: Env) -> Path:
        state = env.get("XDG_STATE_HOME", "").strip()
        if not state:
            try:
                state = str(Path.home() / ".local" / "state")
            except (RuntimeError, KeyError, OSError):  # no HOME and no passwd entry
                return _homeless_folder() / name
        return Path(state).expanduser() / "hackagent-otel" / name

    return default


def _homeless_folder() -> Path:
    """Where state goes with no home folder (a container running as an arbitrary UID):
    a folder of this user's own under the temporary folder, said in a warning."""
    folder = Path(tempfile.gettempdir()) / f"hackagent-otel-{os.getuid()}"
    try:
        owner = folder.stat().st_uid
    except FileNotFoundError:
        owner = os.getuid()
    if owner != os.getuid():  # someone else's: never write records into it
        folder = Path(tempfile.mkdtemp(prefix=f"hackagent-otel-{os.getuid()}-"))
    _log.warning(
        "no home folder (HOME unset and no passwd entry for uid %d): state goes under %s "
        "(set XDG_STATE_HOME or HACKAGENT_OUTBOX_PATH to keep it elsewhere)",
        os.getuid(),
        folder,
    )
    return folder


def markdown_table(table: Iterable[Setting[Any]], option: Literal["argument", "flag"]) -> str:
    """The README's table of ``table``: setting, argument (or option), env var, default."""
    lines = [
        f"| setting | {'argument' if option == 'argument' else 'option'} | env var | default |",
        "| --- | --- | --- | --- |",
    ]
    for row in table:
        if option == "argument":
            where = f"`{row.name}`" if row.configure_argument else ""
        else:
            where = ", ".join(f"`{flag}`" for flag in (row.flag, *row.old_flags()) if flag)
        env = ", ".join(f"`{name}`" for name in row.env)
        env += "".join(f", `{name}` (old name)" for name in row.env_names()[len(row.env) :])
        if row.kind.unit:
            env += f" {row.kind.unit}"
        default = row.shown_default() + (f" {row.note}" if row.note else "")
        lines.append(f"| {row.help} | {where} | {env} | {default} |")
    return "\n".join(lines) + "\n"
