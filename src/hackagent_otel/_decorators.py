"""``track_operation``, ``track_method``, ``track_pipeline``: steps declared, not written.

Drop-ins for hackagent's decorators of the same names, with the same arguments and the
same default input sample (a ``.head()`` sample of ``input_df``/``df``/``data``/
``dataframe``, or the first five of ``goals``/``targets``/``inputs``). One defect is not
copied: the original ``track_pipeline`` decided which methods take the tracker from the
names of their local variables, so a method wrapped by ``track_method`` (whose wrapper
has a local called ``tracker``) was handed a ``tracker=`` argument it does not take.
Here the decision follows the wrapped method's real signature.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from hackagent_otel._tracker import StepTracker

__all__ = ["track_method", "track_operation", "track_pipeline"]

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

Extractor = Callable[[tuple[Any, ...], dict[str, Any]], "dict[str, Any] | None"]


def track_operation(
    step_name: str,
    step_type: str,
    extract_input: Extractor | None = None,
    extract_config: Extractor | None = None,
) -> Callable[[F], F]:
    """Track each call of the function as a step, through its ``tracker=`` argument
    (a :class:`~hackagent_otel.StepTracker`; without one the call runs untracked)."""

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            tracker = kwargs.get("tracker")
            if not isinstance(tracker, StepTracker):
                return func(*args, **kwargs)
            input_data = _extracted(tracker, extract_input, args, kwargs, "input data", step_name)
            if extract_input is None:
                input_data = _default_input(args, kwargs)
            if extract_config is None:
                config = kwargs.get("config")
            else:
                config = _extracted(tracker, extract_config, args, kwargs, "config", step_name)
            with tracker.track_step(step_name, step_type, input_data=input_data, config=config):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def track_method(step_name: str, step_type: str) -> Callable[[F], F]:
    """Track each call of the method as a step, through ``self.tracker`` (config from
    the ``config`` argument or ``self.config``)."""

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            step_tracker = getattr(self, "tracker", None)
            if not isinstance(step_tracker, StepTracker):
                return func(self, *args, **kwargs)
            config = kwargs.get("config") or getattr(self, "config", None)
            with step_tracker.track_step(
                step_name, step_type, input_data=_default_input(args, kwargs), config=config
            ):
                return func(self, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def track_pipeline(tracker_param: str = "tracker") -> Callable[[C], C]:
    """Class decorator: public methods that take ``tracker_param`` get
    ``self.<tracker_param>`` when the caller passes none."""

    def decorator(cls: C) -> C:
        for name in dir(cls):
            if name.startswith("_"):
                continue
            method = getattr(cls, name)
            if callable(method) and _takes(method, tracker_param):
                setattr(cls, name, _injecting(method, tracker_param))
        return cls

    return decorator


def _takes(method: Callable[..., Any], param: str) -> bool:
    """Whether ``method`` (unwrapped through decorators) has a parameter ``param``."""
    try:
        parameters = inspect.signature(method, follow_wrapped=True).parameters
    except (TypeError, ValueError):
        return False
    found = parameters.get(param)
    return found is not None and found.kind is not inspect.Parameter.VAR_KEYWORD


def _injecting(method: Callable[..., Any], param: str) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        if param not in kwargs and hasattr(self, param):
            kwargs[param] = getattr(self, param)
        return method(self, *args, **kwargs)

    return wrapped


def _extracted(
    tracker: StepTracker,
    extractor: Extractor | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    what: str,
    step_name: str,
) -> dict[str, Any] | None:
    """What a caller's extractor gives; a failing one is logged and gives nothing."""
    if extractor is None:
        return None
    try:
        return extractor(args, kwargs)
    except Exception as exc:
        tracker.logger.warning("Failed to extract %s for '%s': %s", what, step_name, exc)
        return None


def _default_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The original's default input sample (see the module docstring)."""
    for key in ("input_df", "df", "data", "dataframe"):
        sample = _head(kwargs.get(key))
        if sample is not None:
            return {"input_sample": sample}
    for key in ("goals", "targets", "inputs"):
        value = kwargs.get(key)
        if isinstance(value, list):
            return {key: value[:5]}
    if args:
        sample = _head(args[0])
        if sample is not None:
            return {"input_sample": sample}
    return None


def _head(value: Any) -> Any:
    """A DataFrame-like value's ``.head().to_dict()``, or None."""
    if value is None or not hasattr(value, "head"):
        return None
    try:
        return value.head().to_dict()
    except Exception:
        return None
