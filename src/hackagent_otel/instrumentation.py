"""``HackAgentInstrumentor``: HackAgent's own code tracks through hackagent-otel, unedited.

Registered under the ``opentelemetry_instrumentor`` entry point as ``hackagent``, so
``opentelemetry-instrument python my_attack.py`` is all a HackAgent user needs; calling
``HackAgentInstrumentor().instrument()`` in the app does the same by hand.

What ``instrument()`` does, when a supported hackagent is installed:

* it imports ``hackagent.router.tracking`` (and so the hackagent package) and puts our
  class or function in place of each name of the tracking API that
  :mod:`hackagent_otel` provides, in the tracking package and its submodules;
* it replaces every other reference to those originals held in the globals of an
  already imported ``hackagent.*`` module (``from hackagent.router.tracking import
  StepTracker`` at module level, the decorators' ``isinstance`` check against their
  module's ``StepTracker``), and remembers each one;
* modules imported later bind ours, because they import from the patched modules, and
  imports inside functions look the names up when they run.

This works whether hackagent was imported before or after ``instrument()``, and needs
no import hook: once the tracking modules are patched, nothing can import an original
from them. ``uninstrument()`` puts the originals back in every ``hackagent.*`` module
global that holds one of ours (those it replaced and those bound while instrumented),
and undoes the set-up ``instrument()`` made, if it is still the current one.

A name :mod:`hackagent_otel` does not provide is left as hackagent's own and logged at
debug level. With a hackagent outside :data:`SUPPORTED_HACKAGENT`, ``instrument()``
logs one warning and changes nothing; with none installed, it logs at debug level and
changes nothing (the instrumentor is loaded in every process ``opentelemetry-instrument``
starts).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import threading
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.sdk.trace import TracerProvider

import hackagent_otel
from hackagent_otel import _setup

_logger = logging.getLogger("hackagent_otel.instrumentation")

# The hackagent releases whose ``hackagent.router.tracking`` has exactly the 0.5.0 API
# (the one hackagent_otel re-makes). Checked on the sdists from PyPI
# (``pip download hackagent==X --no-deps --no-binary :all:``) of 0.4.4, 0.5.0, 0.6.0,
# 0.7.0, 0.8.0, 0.9.1, 0.10.0, 0.10.1, 0.11.0, 0.12.0, 0.13.0, 0.13.1, 0.14.0 and 0.15.0,
# by listing with ``ast`` each router/tracking module's ``__all__``, classes, dataclass
# fields, and public functions and methods with their parameters and defaults, and
# diffing each listing against 0.5.0's:
# * 0.4.4 has no TrackingCoordinator;
# * 0.6.0 already differs: TrackingContext lost ``delegate_sequence_to`` (and its
#   ``_delegate_ctx`` field), TrackingCoordinator gained
#   ``initialize_goals_from_pipeline_data`` and ``finalize_all_goals(...,
#   include_evaluation_trace)``, Context gained fields and methods;
# * 0.7.0 to 0.14.0 also replace the ``client`` argument of TrackingContext, Tracker and
#   TrackingCoordinator.create with a storage ``backend``, and add more;
# * 0.15.0 has no router/tracking at all (nor StepTracker, Tracker or their kin).
# 0.5.0 is the only 0.5 release so far; later 0.5.x patch releases are taken to keep it.
SUPPORTED_HACKAGENT = "hackagent >= 0.5, < 0.6"

#: The names each tracking module of hackagent 0.5.x defines, that we may stand in for.
TRACKING_API: Mapping[str, tuple[str, ...]] = {
    "hackagent.router.tracking": (
        "Context",
        "StepTracker",
        "Tracker",
        "TrackingContext",
        "TrackingCoordinator",
        "track_operation",
        "track_pipeline",
    ),
    "hackagent.router.tracking.context": ("TrackingContext",),
    "hackagent.router.tracking.step": ("StepTracker",),
    "hackagent.router.tracking.tracker": ("Context", "Tracker"),
    "hackagent.router.tracking.coordinator": ("TrackingCoordinator",),
    "hackagent.router.tracking.decorators": ("track_operation", "track_pipeline", "track_method"),
}

#: Keyword arguments of ``instrument()`` that are passed on to ``configure()``.
_CONFIGURE_OPTIONS = frozenset(inspect.signature(_setup.configure).parameters)


@dataclass(frozen=True)
class _Swap:
    """One API name: hackagent's object and the one of ours that stands in for it."""

    name: str
    original: object
    replacement: object


class _Patch:
    """What one ``instrument()`` changed, so ``uninstrument()`` can undo exactly that."""

    def __init__(self, swaps: list[_Swap]) -> None:
        self.swaps = swaps
        self._by_original = {id(s.original): s for s in swaps}
        self._by_replacement: dict[int, list[_Swap]] = {}
        for swap in swaps:
            self._by_replacement.setdefault(id(swap.replacement), []).append(swap)
        #: Every module global ``apply()`` set: (module, attribute, swap).
        self.replaced: list[tuple[ModuleType, str, _Swap]] = []
        #: The set-up ``instrument()`` made, if it made one.
        self.telemetry: _setup.Telemetry | None = None

    def apply(self) -> None:
        """Replace each original in every loaded ``hackagent.*`` module's globals."""
        for module in _hackagent_modules():
            for attribute, value in list(vars(module).items()):
                swap = self._by_original.get(id(value))
                if swap is not None and value is swap.original:
                    setattr(module, attribute, swap.replacement)
                    self.replaced.append((module, attribute, swap))

    def revert(self) -> int:
        """Put the originals back where ``apply()`` replaced them (unless changed since),
        then in any other ``hackagent.*`` module global that bound one of ours while
        instrumented. Returns how many globals were restored."""
        restored = 0
        done: set[tuple[int, str]] = set()
        for module, attribute, swap in self.replaced:
            done.add((id(module), attribute))
            if vars(module).get(attribute) is swap.replacement:
                setattr(module, attribute, swap.original)
                restored += 1
        for module in _hackagent_modules():
            for attribute, value in list(vars(module).items()):
                if (id(module), attribute) in done:
                    continue
                found = self._original_for(attribute, value)
                if found is not None:
                    setattr(module, attribute, found.original)
                    restored += 1
        return restored

    def _original_for(self, attribute: str, value: object) -> _Swap | None:
        """The swap whose replacement ``value`` is; by name if ours stands in for two."""
        candidates = [s for s in self._by_replacement.get(id(value), ()) if s.replacement is value]
        if len(candidates) > 1:
            candidates = [s for s in candidates if s.name == attribute]
        return candidates[0] if len(candidates) == 1 else None


def _hackagent_modules() -> Iterator[ModuleType]:
    """The loaded modules of the hackagent package (not hackagent_otel)."""
    for name, module in list(sys.modules.items()):
        if (name == "hackagent" or name.startswith("hackagent.")) and isinstance(
            module, ModuleType
        ):
            yield module


def _tracking_modules() -> dict[str, ModuleType] | None:
    """Import the tracking package and submodules; ``None`` (logged) if that fails."""
    modules: dict[str, ModuleType] = {}
    for name in TRACKING_API:
        try:
            modules[name] = importlib.import_module(name)
        except Exception as exc:
            _logger.warning(
                "hackagent_otel: could not import %s (%s: %s); nothing was instrumented",
                name,
                type(exc).__name__,
                exc,
            )
            return None
    return modules


def _swaps(modules: Mapping[str, ModuleType]) -> list[_Swap]:
    """One swap per API name hackagent defines and hackagent_otel provides."""
    swaps: dict[int, _Swap] = {}
    for module_name, names in TRACKING_API.items():
        module = modules[module_name]
        for name in names:
            original = getattr(module, name, None)
            if original is None:
                _logger.debug("hackagent_otel: %s has no %s; nothing to replace", module_name, name)
                continue
            replacement = getattr(hackagent_otel, name, None)
            if replacement is None:
                _logger.debug(
                    "hackagent_otel: no %s of ours yet; hackagent's %s.%s is left in place",
                    name,
                    module_name,
                    name,
                )
                continue
            if replacement is not original:
                swaps.setdefault(id(original), _Swap(name, original, replacement))
    return list(swaps.values())


# opentelemetry-instrumentation marks its instrumentor module ``# type: ignore`` as a
# whole, so mypy sees none of its names: BaseInstrumentor is Any here.
class HackAgentInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Makes hackagent's own code use hackagent-otel's tracking, without editing it.

    ``instrument(**options)``: ``options`` are :func:`hackagent_otel.configure`'s
    (``tracer_provider``, ``service_name``, ``handle_sigterm``, ...); an invalid one
    raises, before anything is changed. Unless a ``configure()`` set-up is already in
    force (then it is kept and ``options`` are ignored), ``instrument()`` calls
    ``configure(**options)``, which attaches to the given provider or to the global SDK
    provider (the one ``opentelemetry-instrument``'s SDK configurator set, or the
    app's), and creates one only when there is neither. With no SDK provider and no
    options it does not call it: the first tracked step sets up privately, as without
    the instrumentor, so an app that installs its own provider later is not pre-empted.
    """

    _patch: _Patch | None = None
    _modules: dict[str, ModuleType] | None = None
    _lock = threading.RLock()

    def instrumentation_dependencies(self) -> Collection[str]:
        """The hackagent releases whose tracking API this instruments."""
        return (SUPPORTED_HACKAGENT,)

    def instrument(self, **kwargs: Any) -> Any:
        """Instrument hackagent, or log why not and change nothing.

        The checks run here, always, before the base class marks anything instrumented:
        ``opentelemetry-instrument`` passes ``skip_dep_check=True`` (it only checks an
        ``instruments`` extra, which this package does not declare so as not to depend
        on hackagent), and the base class would log a version mismatch as an error; a
        mismatch here is one warning.
        """
        with self._lock:
            if not self.is_instrumented_by_opentelemetry:
                modules = self._supported_tracking_modules()
                if modules is None:
                    return None
                self._modules = modules
            return super().instrument(**{**kwargs, "skip_dep_check": True})

    def uninstrument(self, **kwargs: Any) -> Any:
        """Put hackagent's originals back (see the module docstring)."""
        with self._lock:
            return super().uninstrument(**kwargs)

    def _supported_tracking_modules(self) -> dict[str, ModuleType] | None:
        """The tracking modules of a supported hackagent, imported; else ``None``, logged:
        a warning for another version or a failed import, debug when there is none."""
        conflict = get_dependency_conflicts(self.instrumentation_dependencies())
        if conflict is None:
            return _tracking_modules()
        if conflict.found:
            _logger.warning(
                "hackagent_otel: HackAgentInstrumentor instruments %s (the tracking API it "
                "re-makes), but %s is installed; nothing was instrumented",
                SUPPORTED_HACKAGENT,
                conflict.found,
            )
        else:
            _logger.debug("hackagent_otel: hackagent is not installed; nothing to instrument")
        return None

    def _instrument(self, **kwargs: Any) -> None:
        modules, self._modules = self._modules, None
        if modules is None:  # only instrument() prepares them
            return
        # configure() first: an invalid option raises before anything is patched.
        telemetry = _configure(kwargs)
        patch = _Patch(_swaps(modules))
        patch.telemetry = telemetry
        patch.apply()
        self._patch = patch
        _logger.debug(
            "hackagent_otel: instrumented hackagent: %s in %d module globals",
            ", ".join(sorted({s.name for s in patch.swaps})) or "nothing",
            len(patch.replaced),
        )

    def _uninstrument(self, **kwargs: Any) -> None:
        patch, self._patch = self._patch, None
        if patch is None:
            return
        restored = patch.revert()
        if patch.telemetry is not None and _setup.current() is patch.telemetry:
            hackagent_otel.shutdown()
        _logger.debug("hackagent_otel: uninstrumented hackagent: %d module globals", restored)


def _configure(options: Mapping[str, Any]) -> _setup.Telemetry | None:
    """``configure()`` now when that is the right moment (see the class docstring)."""
    if _setup.current() is not None:
        return None
    given = {k: v for k, v in options.items() if k in _CONFIGURE_OPTIONS}
    provider = given.get("tracer_provider") or trace.get_tracer_provider()
    if not given and not isinstance(provider, TracerProvider):
        return None
    return _setup.configure(**given)


__all__ = ["SUPPORTED_HACKAGENT", "TRACKING_API", "HackAgentInstrumentor"]
