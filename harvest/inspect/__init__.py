"""Looking at traces: the terminal stepper, the HTML viewer and the notebook API.

    >>> from harvest.inspect import load_traces
    >>> traces = load_traces("harvest-out", where="status = 'ok'")   # doctest: +SKIP
    >>> traces.to_pandas(); traces[0]                                  # doctest: +SKIP
"""

from __future__ import annotations

from harvest.inspect.load import TraceNotFoundError, find_traces, select_traces
from harvest.inspect.notebook import Trace, Traces, load_traces

__all__ = ["Trace", "TraceNotFoundError", "Traces", "find_traces", "load_traces", "select_traces"]
