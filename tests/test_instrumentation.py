"""HackAgentInstrumentor on a fake hackagent built in tmp_path.

The real hackagent is not installed in this environment (and must not be), so each test
writes a small package with hackagent 0.5.0's layout and import style: the tracking
package re-exporting its submodules' names, ``router/__init__`` and a technique's base
module importing them at module level, a module importing them inside a function, a
function decorated with ``track_operation``, the decorators' ``isinstance`` check
against their module's ``StepTracker``, and a dist-info so version checks see it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hackagent_otel
from hackagent_otel import _setup
from hackagent_otel.instrumentation import (
    SUPPORTED_HACKAGENT,
    TRACKING_API,
    HackAgentInstrumentor,
)
from otel_fixtures import OTel, missing

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
API_NAMES = sorted({name for names in TRACKING_API.values() for name in names})

FAKE_HACKAGENT = {
    "hackagent/__init__.py": """
        from .agent import HackAgent
        """,
    "hackagent/agent.py": """
        from hackagent.router import AgentRouter


        class HackAgent:
            def attack(self, run_id):
                # 0.5.0 loads its attack techniques lazily too.
                from hackagent.attacks.techniques.lazy import run_pipeline

                return run_pipeline(run_id)
        """,
    "hackagent/router/__init__.py": """
        from .router import AgentRouter
        from .tracking import StepTracker, TrackingContext, track_operation
        """,
    "hackagent/router/router.py": """
        class AgentRouter:
            pass
        """,
    "hackagent/router/tracking/__init__.py": """
        from .context import TrackingContext
        from .coordinator import TrackingCoordinator
        from .decorators import track_operation, track_pipeline
        from .step import StepTracker
        from .tracker import Context, Tracker

        __all__ = [
            "Context",
            "StepTracker",
            "Tracker",
            "TrackingContext",
            "TrackingCoordinator",
            "track_operation",
            "track_pipeline",
        ]
        """,
    "hackagent/router/tracking/context.py": """
        from dataclasses import dataclass, field
        from typing import Any, Dict, Optional


        @dataclass
        class TrackingContext:
            client: Any = None
            run_id: Optional[str] = None
            parent_result_id: Optional[str] = None
            logger: Any = None
            sequence_counter: int = 0
            metadata: Dict[str, Any] = field(default_factory=dict)

            def add_metadata(self, key, value):
                self.metadata[key] = value
        """,
    "hackagent/router/tracking/step.py": """
        from contextlib import contextmanager

        from .context import TrackingContext


        class StepTracker:
            def __init__(self, context):
                self.context = context

            @contextmanager
            def track_step(self, step_name, step_type, input_data=None, config=None):
                yield None
        """,
    "hackagent/router/tracking/tracker.py": """
        from dataclasses import dataclass


        @dataclass
        class Context:
            goal: str
            goal_index: int


        class Tracker:
            def __init__(self, client, run_id, logger=None, attack_type=None):
                self.client = client
                self.run_id = run_id
        """,
    "hackagent/router/tracking/coordinator.py": """
        import logging

        from .context import TrackingContext
        from .step import StepTracker
        from .tracker import Context, Tracker


        class TrackingCoordinator:
            def __init__(self, step_tracker, goal_tracker, logger=None):
                self.step_tracker = step_tracker
                self.goal_tracker = goal_tracker

            @classmethod
            def create(cls, client, run_id, logger=None, attack_type="unknown", goals=None,
                       initial_metadata=None):
                logger = logger or logging.getLogger(__name__)
                context = TrackingContext(client=client, run_id=run_id, parent_result_id=None,
                                          logger=logger)
                context.add_metadata("attack_type", attack_type)
                goal_tracker = None
                if client and run_id:
                    goal_tracker = Tracker(client=client, run_id=run_id, logger=logger,
                                           attack_type=attack_type)
                return cls(step_tracker=StepTracker(context), goal_tracker=goal_tracker)
        """,
    "hackagent/router/tracking/decorators.py": """
        import functools

        from .step import StepTracker


        def track_operation(step_name, step_type, extract_input=None, extract_config=None):
            def decorator(func):
                @functools.wraps(func)
                def wrapper(*args, **kwargs):
                    tracker = kwargs.get("tracker")
                    if tracker is None or not isinstance(tracker, StepTracker):
                        return func(*args, **kwargs)
                    with tracker.track_step(step_name=step_name, step_type=step_type,
                                            input_data=None, config=kwargs.get("config")):
                        return func(*args, **kwargs)

                return wrapper

            return decorator


        def track_pipeline(tracker_param="tracker"):
            return lambda cls: cls


        def track_method(step_name, step_type):
            return track_operation(step_name, step_type)
        """,
    "hackagent/attacks/__init__.py": "",
    "hackagent/attacks/techniques/__init__.py": "",
    "hackagent/attacks/techniques/base.py": """
        from hackagent.router.tracking import StepTracker, TrackingCoordinator


        class BaseAttack:
            def __init__(self, client=None, run_id=None):
                self.coordinator = TrackingCoordinator.create(client, run_id)
                self.tracker = self.coordinator.step_tracker

            @staticmethod
            def tracking_classes():
                return StepTracker, TrackingCoordinator
        """,
    "hackagent/attacks/techniques/steps.py": """
        from hackagent.router.tracking import track_operation


        @track_operation("Generate Prefixes", "STEP1_GENERATE")
        def generate(goals, tracker=None):
            return len(goals)
        """,
    "hackagent/attacks/techniques/lazy.py": """
        from hackagent.attacks.techniques.steps import generate


        def run_pipeline(run_id):
            from hackagent.router.tracking import StepTracker, TrackingContext

            tracker = StepTracker(TrackingContext(run_id=run_id))
            generate(goals=["g"], tracker=tracker)
            return tracker
        """,
}

#: The fake's modules that hackagent's own code would import (tracking aside).
CORE_MODULES = ["hackagent", "hackagent.agent", "hackagent.router"]
ATTACK_MODULES = [
    "hackagent.attacks.techniques.base",
    "hackagent.attacks.techniques.steps",
    "hackagent.attacks.techniques.lazy",
]


def write_fake_hackagent(site: Path, version: str, files: dict[str, str] | None = None) -> None:
    """The fake package and its dist-info under ``site``."""
    for relative, source in (files or FAKE_HACKAGENT).items():
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    dist_info = site / f"hackagent-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: hackagent\nVersion: {version}\n"
    )


def forget_hackagent() -> None:
    for name in [n for n in sys.modules if n == "hackagent" or n.startswith("hackagent.")]:
        del sys.modules[name]


def import_all(names: list[str]) -> dict[str, ModuleType]:
    return {name: importlib.import_module(name) for name in names}


def api_bindings() -> dict[tuple[str, str], object]:
    """Every global of a loaded hackagent module bound to a tracking API name."""
    return {
        (name, attribute): value
        for name, module in list(sys.modules.items())
        if name == "hackagent" or name.startswith("hackagent.")
        for attribute, value in vars(module).items()
        if attribute in API_NAMES
    }


MakeFake = Callable[..., Path]

IMPORT_ORDERS = pytest.mark.parametrize(
    "imported_first", [True, False], ids=["imported-first", "instrumented-first"]
)


@pytest.fixture
def make_fake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> Iterator[MakeFake]:
    """Puts a fake hackagent (default 0.5.0) on sys.path; afterwards the instrumentor is
    uninstrumented, the fake forgotten and any set-up shut down."""
    forget_hackagent()

    def make(version: str = "0.5.0", files: dict[str, str] | None = None) -> Path:
        site = tmp_path / "site"
        write_fake_hackagent(site, version, files)
        monkeypatch.syspath_prepend(str(site))
        return site

    yield make
    instrumentor = HackAgentInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    forget_hackagent()
    hackagent_otel.shutdown()


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """An object of ours for every API name, whether hackagent_otel provides it yet or not
    (the decorators stay usable as decorators)."""

    def decorator_factory() -> Callable[..., Any]:
        def factory(*args: Any, **kwargs: Any) -> Callable[[Any], Any]:
            return lambda target: target

        return factory

    made: dict[str, object] = {}
    for name in API_NAMES:
        stand_in = decorator_factory() if name.startswith("track_") else type(name, (), {})
        monkeypatch.setattr(hackagent_otel, name, stand_in, raising=False)
        made[name] = stand_in
    return made


def tracking_originals() -> dict[str, object]:
    """hackagent's own object for each API name, read off the (unpatched) modules."""
    found: dict[str, object] = {}
    for module_name, names in TRACKING_API.items():
        module = importlib.import_module(module_name)
        for name in names:
            found.setdefault(name, getattr(module, name))
    return found


def expected(name: str, originals: dict[str, object]) -> object:
    """What a binding of ``name`` must be while instrumented: ours when we provide it."""
    return getattr(hackagent_otel, name, None) or originals[name]


# -- both import orders ---------------------------------------------------------------


def test_instrumenting_before_hackagent_is_imported(make_fake: MakeFake, otel: OTel) -> None:
    make_fake()
    HackAgentInstrumentor().instrument()
    tracking = sys.modules["hackagent.router.tracking"]
    assert tracking.StepTracker is hackagent_otel.StepTracker
    assert tracking.TrackingContext is hackagent_otel.TrackingContext

    modules = import_all(ATTACK_MODULES)
    base = modules["hackagent.attacks.techniques.base"]
    assert base.StepTracker is hackagent_otel.StepTracker
    attack = base.BaseAttack(run_id=str(uuid.uuid4()))
    assert isinstance(attack.tracker, hackagent_otel.StepTracker)

    # Imported inside a function, and checked by the decorator's isinstance.
    tracker = sys.modules["hackagent"].HackAgent().attack(str(uuid.uuid4()))
    assert isinstance(tracker, hackagent_otel.StepTracker)
    assert [s.name for s in otel.steps()] == ["Generate Prefixes"]


def test_instrumenting_after_hackagent_is_imported(make_fake: MakeFake, otel: OTel) -> None:
    make_fake()
    modules = import_all(CORE_MODULES + ATTACK_MODULES)
    originals = tracking_originals()
    bound_before = api_bindings()

    HackAgentInstrumentor().instrument()

    for (module, name), value in api_bindings().items():
        assert value is expected(name, originals), (module, name)
        assert bound_before[module, name] is originals[name], (module, name)
    assert modules["hackagent.router"].StepTracker is hackagent_otel.StepTracker
    decorators = sys.modules["hackagent.router.tracking.decorators"]
    assert decorators.StepTracker is hackagent_otel.StepTracker

    # The function was decorated before instrument(); its isinstance check now sees ours.
    tracker = modules["hackagent"].HackAgent().attack(str(uuid.uuid4()))
    assert isinstance(tracker, hackagent_otel.StepTracker)
    assert [s.name for s in otel.steps()] == ["Generate Prefixes"]


@IMPORT_ORDERS
def test_every_api_name_we_provide_is_swapped_in_every_module(
    make_fake: MakeFake, stand_ins: dict[str, object], imported_first: bool
) -> None:
    make_fake()
    if imported_first:
        import_all(CORE_MODULES + ATTACK_MODULES)
    HackAgentInstrumentor().instrument()
    import_all(CORE_MODULES + ATTACK_MODULES)

    bindings = api_bindings()
    for module_name, names in TRACKING_API.items():
        for name in names:
            assert (module_name, name) in bindings
    assert {(m, n) for (m, n), value in bindings.items() if value is not stand_ins[n]} == set()
    assert ("hackagent.attacks.techniques.base", "TrackingCoordinator") in bindings
    assert ("hackagent.router.tracking.coordinator", "Tracker") in bindings


# -- uninstrument ---------------------------------------------------------------------


@pytest.mark.parametrize("use_stand_ins", [False, True], ids=["our-exports", "every-name"])
def test_uninstrument_restores_the_exact_originals_everywhere(
    make_fake: MakeFake, otel: OTel, request: pytest.FixtureRequest, use_stand_ins: bool
) -> None:
    if use_stand_ins:
        request.getfixturevalue("stand_ins")
    make_fake()
    import_all([*CORE_MODULES, "hackagent.attacks.techniques.base"])
    originals = tracking_originals()
    before = {
        name: dict(vars(module))
        for name, module in sys.modules.items()
        if name == "hackagent" or name.startswith("hackagent.")
    }
    instrumentor = HackAgentInstrumentor()
    instrumentor.instrument()
    # Imported while instrumented: these bind ours.
    steps = importlib.import_module("hackagent.attacks.techniques.steps")
    assert steps.track_operation is expected("track_operation", originals)
    assert all(value is expected(n, originals) for (_, n), value in api_bindings().items())

    instrumentor.uninstrument()

    for module_name, namespace in before.items():
        module = vars(sys.modules[module_name])
        assert [k for k, v in namespace.items() if module.get(k) is not v] == [], module_name
    for (module_name, name), value in api_bindings().items():
        assert value is originals[name], (module_name, name)
    assert steps.track_operation is originals["track_operation"]
    assert not instrumentor.is_instrumented_by_opentelemetry


def test_instrument_uninstrument_instrument_again(make_fake: MakeFake, otel: OTel) -> None:
    make_fake()
    instrumentor = HackAgentInstrumentor()
    for _ in range(2):
        instrumentor.instrument()
        assert sys.modules["hackagent.router"].StepTracker is hackagent_otel.StepTracker
        instrumentor.uninstrument()
        assert sys.modules["hackagent.router"].StepTracker is not hackagent_otel.StepTracker


def test_instrumenting_twice_is_harmless(
    make_fake: MakeFake, otel: OTel, caplog: pytest.LogCaptureFixture
) -> None:
    make_fake()
    originals = tracking_originals()
    instrumentor = HackAgentInstrumentor()
    instrumentor.instrument()
    bound = api_bindings()

    with caplog.at_level(logging.WARNING):
        HackAgentInstrumentor().instrument()
    assert api_bindings() == bound
    assert [r.getMessage() for r in caplog.records] == [
        "Attempting to instrument while already instrumented"
    ]

    # One uninstrument() undoes it all; a second one changes nothing.
    instrumentor.uninstrument()
    restored = api_bindings()
    assert all(value is originals[name] for (_, name), value in restored.items())
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        instrumentor.uninstrument()
    assert api_bindings() == restored
    assert len(caplog.records) == 1


# -- versions and failures: one warning, nothing changed ------------------------------


@IMPORT_ORDERS
def test_an_unsupported_version_logs_one_warning_and_changes_nothing(
    make_fake: MakeFake, caplog: pytest.LogCaptureFixture, imported_first: bool
) -> None:
    make_fake(version="0.6.0")
    if imported_first:
        import_all(CORE_MODULES + ATTACK_MODULES)
    bound = api_bindings()
    loaded = set(sys.modules)
    instrumentor = HackAgentInstrumentor()

    with caplog.at_level(logging.DEBUG):
        result = instrumentor.instrument()

    assert result is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert SUPPORTED_HACKAGENT in message
    assert "hackagent 0.6.0" in message
    assert api_bindings() == bound
    assert set(sys.modules) == loaded  # hackagent was not even imported
    assert not instrumentor.is_instrumented_by_opentelemetry
    assert _setup.current() is None


def test_without_hackagent_nothing_happens_and_nothing_is_logged_above_debug(
    clean_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    forget_hackagent()
    instrumentor = HackAgentInstrumentor()
    with caplog.at_level(logging.DEBUG):
        instrumentor.instrument()
    assert [r for r in caplog.records if r.levelno > logging.DEBUG] == []
    assert "hackagent" not in sys.modules
    assert not instrumentor.is_instrumented_by_opentelemetry


def test_a_hackagent_that_fails_to_import_logs_one_warning_and_changes_nothing(
    make_fake: MakeFake, caplog: pytest.LogCaptureFixture
) -> None:
    broken = dict(FAKE_HACKAGENT)
    broken["hackagent/router/router.py"] = "raise ImportError('no module named litellm')\n"
    make_fake(files=broken)
    instrumentor = HackAgentInstrumentor()
    with caplog.at_level(logging.WARNING):
        instrumentor.instrument()
    assert len(caplog.records) == 1
    assert "litellm" in caplog.records[0].getMessage()
    assert not instrumentor.is_instrumented_by_opentelemetry
    assert _setup.current() is None


def test_a_name_we_do_not_provide_is_left_alone_and_logged_at_debug(
    make_fake: MakeFake,
    otel: OTel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_fake()
    monkeypatch.delattr(hackagent_otel, "TrackingContext")
    original = importlib.import_module("hackagent.router.tracking.context").TrackingContext
    with caplog.at_level(logging.DEBUG, logger="hackagent_otel.instrumentation"):
        HackAgentInstrumentor().instrument()
    assert sys.modules["hackagent.router.tracking"].TrackingContext is original
    assert sys.modules["hackagent.router"].TrackingContext is original
    assert sys.modules["hackagent.router"].StepTracker is hackagent_otel.StepTracker
    assert any(
        r.levelno == logging.DEBUG and "TrackingContext" in r.getMessage() for r in caplog.records
    )
    assert [r for r in caplog.records if r.levelno > logging.DEBUG] == []


# -- set-up -----------------------------------------------------------------------------


def test_instrument_configures_on_the_given_provider_and_uninstrument_undoes_it(
    make_fake: MakeFake,
) -> None:
    make_fake()
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = HackAgentInstrumentor()
    instrumentor.instrument(tracer_provider=provider, handle_sigterm=False)
    telemetry = _setup.current()
    assert telemetry is not None
    assert telemetry.provider is provider
    assert not telemetry.owns_provider

    tracker = sys.modules["hackagent"].HackAgent().attack(str(uuid.uuid4()))
    assert isinstance(tracker, hackagent_otel.StepTracker)
    assert [s.name for s in exporter.get_finished_spans()] == ["Generate Prefixes"]

    instrumentor.uninstrument()
    assert _setup.current() is None
    provider.shutdown()


def test_an_apps_own_set_up_is_kept(make_fake: MakeFake, otel: OTel) -> None:
    make_fake()
    instrumentor = HackAgentInstrumentor()
    instrumentor.instrument(handle_sigterm=False)
    assert _setup.current() is otel.telemetry
    instrumentor.uninstrument()
    assert _setup.current() is otel.telemetry


def test_with_no_sdk_provider_set_up_is_left_to_the_first_step(
    make_fake: MakeFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_fake()
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    HackAgentInstrumentor().instrument()
    assert _setup.current() is None
    assert sys.modules["hackagent.router"].StepTracker is hackagent_otel.StepTracker


# -- the entry point and opentelemetry-instrument ----------------------------------------


def declared_entry_points() -> dict[str, dict[str, str]]:
    try:
        import tomllib  # type: ignore[import-not-found, unused-ignore]  # 3.11+
    except ImportError:  # Python 3.10
        missing("reading pyproject.toml needs tomllib (Python 3.11+)")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    entry_points: dict[str, dict[str, str]] = project["entry-points"]
    return entry_points


def test_the_entry_point_names_the_instrumentor() -> None:
    value = declared_entry_points()["opentelemetry_instrumentor"]["hackagent"]
    module, _, attribute = value.partition(":")
    assert getattr(importlib.import_module(module), attribute) is HackAgentInstrumentor
    assert list(HackAgentInstrumentor().instrumentation_dependencies()) == [SUPPORTED_HACKAGENT]


def write_our_dist_info(site: Path) -> None:
    """hackagent-otel's metadata as this checkout declares it, ahead of the installed one
    on the path, so ``opentelemetry-instrument`` finds the entry points of this source."""
    dist_info = site / "hackagent_otel-0.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: hackagent-otel\nVersion: 0.1.0\n"
    )
    lines = []
    for group, entries in declared_entry_points().items():
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {value}" for name, value in entries.items())
        lines.append("")
    (dist_info / "entry_points.txt").write_text("\n".join(lines))


def write_sdk_configurator(site: Path) -> None:
    """What ``opentelemetry-distro`` registers: the SDK configurator that sets the global
    providers from the ``OTEL_*`` env vars (its ``OpenTelemetryConfigurator`` is this
    class, subclassed with nothing added). Without one, ``opentelemetry-instrument``
    sets up no SDK at all."""
    dist_info = site / "sdk_configurator-0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sdk-configurator\nVersion: 0.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[opentelemetry_configurator]\n"
        "sdk = opentelemetry.sdk._configuration:_OTelSDKConfigurator\n"
    )


SCRIPT = """
    import json, uuid
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import hackagent_otel
    from hackagent_otel import _setup
    from hackagent.router.tracking import StepTracker, TrackingContext

    configured_at_start = _setup.current()
    provider = trace.get_tracer_provider()
    exporter = InMemorySpanExporter()
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracker = StepTracker(TrackingContext(run_id=str(uuid.uuid4())))
    with tracker.track_step("Generate Prefixes", "STEP1_GENERATE"):
        pass
    telemetry = _setup.current()
    print(json.dumps({
        "ours": StepTracker is hackagent_otel.StepTracker,
        "tracker_is_ours": isinstance(tracker, hackagent_otel.StepTracker),
        "sdk_provider": isinstance(provider, TracerProvider),
        "configured_at_start": configured_at_start is not None,
        "attached": telemetry is not None and telemetry.provider is provider
                    and not telemetry.owns_provider,
        "set_up_privately": telemetry is not None and telemetry.owns_provider,
        "spans": [s.name for s in exporter.get_finished_spans()],
    }))
"""


def run_instrumented(
    tmp_path: Path, version: str, *, sdk_configurator: bool = True
) -> tuple[dict[str, Any], str]:
    """``opentelemetry-instrument python my_attack.py`` with the fake hackagent; the
    script's JSON and the run's stderr."""
    site = tmp_path / "site"
    write_fake_hackagent(site, version)
    write_our_dist_info(site)
    if sdk_configurator:
        write_sdk_configurator(site)
    script = tmp_path / "my_attack.py"
    script.write_text(textwrap.dedent(SCRIPT))
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HACKAGENT_"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=f"{site}{os.pathsep}{SRC}",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        HACKAGENT_OUTBOX_PATH=str(tmp_path / "outbox.sqlite3"),
    )
    done = subprocess.run(
        [str(bin_dir / "opentelemetry-instrument"), "python", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result, done.stderr


def test_opentelemetry_instrument_is_enough(tmp_path: Path) -> None:
    result, stderr = run_instrumented(tmp_path, "0.5.0")
    assert result == {
        "ours": True,
        "tracker_is_ours": True,
        "sdk_provider": True,
        "configured_at_start": True,
        "attached": True,
        "set_up_privately": False,
        "spans": ["Generate Prefixes"],
    }
    assert "nothing was instrumented" not in stderr, stderr


def test_opentelemetry_instrument_without_an_sdk_configurator(tmp_path: Path) -> None:
    """No distro, so no SDK provider: the first step sets up privately, as it does
    without the instrumentor; hackagent's code still uses ours."""
    result, _ = run_instrumented(tmp_path, "0.5.0", sdk_configurator=False)
    assert result["ours"] is True
    assert result["tracker_is_ours"] is True
    assert result["sdk_provider"] is False
    assert result["configured_at_start"] is False
    assert result["set_up_privately"] is True


def test_opentelemetry_instrument_with_an_unsupported_version_warns_once(tmp_path: Path) -> None:
    result, stderr = run_instrumented(tmp_path, "0.7.0")
    assert result["ours"] is False
    assert result["configured_at_start"] is False
    assert stderr.count("nothing was instrumented") == 1, stderr
    assert "hackagent 0.7.0" in stderr
