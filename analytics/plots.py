"""Kaplan–Meier and cumulative-incidence plots with the numbers at risk underneath, as SVG text and
PNG bytes. Rendered on matplotlib's Agg canvas with ``Figure`` objects (no pyplot state), and with
fixed SVG ids and no timestamps, so the same numbers always give the same files."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless workers; must precede lifelines.plotting, which imports pyplot

import pandas as pd  # noqa: E402
from lifelines import KaplanMeierFitter  # noqa: E402
from lifelines.plotting import add_at_risk_counts  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

_RC = {"svg.hashsalt": "tolerance", "svg.fonttype": "path", "font.size": 9}
_MONTH_TICKS = [0, 91, 182, 274, 365, 456, 547, 639, 730]


def _render(fig: Figure) -> tuple[str, bytes]:
    FigureCanvasAgg(fig)
    svg, png = io.StringIO(), io.BytesIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(svg, format="svg", metadata={"Date": None}, bbox_inches="tight")
        fig.savefig(png, format="png", dpi=110, metadata={"Software": None}, bbox_inches="tight")
    return svg.getvalue(), png.getvalue()


def _fitters(frame: pd.DataFrame, duration: str, event: pd.Series) -> list[KaplanMeierFitter]:
    fitters = []
    for label in sorted(frame["group"].unique()):
        rows = frame["group"] == label
        fitters.append(KaplanMeierFitter(label=str(label)).fit(frame.loc[rows, duration], event[rows]))
    return fitters


def _axes(title: str, ylabel: str, horizon: float) -> tuple[Figure, Any]:
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.5, 4.8))
        ax = fig.add_subplot(111)
        ax.set_title(title)
        ax.set_xlabel("Days since infusion")
        ax.set_ylabel(ylabel)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0, max(horizon, 30))
        ax.set_xticks([t for t in _MONTH_TICKS if t <= horizon])
        ax.grid(alpha=0.3)
    return fig, ax


def km_plot(frame: pd.DataFrame, *, title: str, horizon: float) -> tuple[str, bytes]:
    """KM curves per group (censoring marks) with the numbers at risk below the axis."""
    fig, ax = _axes(title, "Probability relapse-free", horizon)
    fitters = _fitters(frame, "duration", frame["event"])
    with matplotlib.rc_context(_RC):
        for fitter in fitters:
            fitter.plot_survival_function(ax=ax, ci_show=False, show_censors=True, censor_styles={"ms": 4})
        ax.set_xlim(0, max(horizon, 30))
        ax.set_xlabel("Days since infusion")  # lifelines relabels the axis "timeline"
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
        add_at_risk_counts(*fitters, ax=ax, fig=fig, rows_to_show=["At risk"])
    return _render(fig)


def cif_plot(frame: pd.DataFrame, numbers: dict[str, Any], *, title: str, horizon: float) -> tuple[str, bytes]:
    """Aalen–Johansen cumulative incidence of relapse per group, with the numbers still followed
    (not yet relapsed, dead, retreated or censored) below the axis."""
    fig, ax = _axes(title, "Cumulative incidence of relapse", horizon)
    with matplotlib.rc_context(_RC):
        for label in sorted(frame["group"].unique()):
            cif = numbers["cumulative_incidence"].get(label) or {}
            table = cif.get("table") or []
            times = [0.0] + [row["time"] for row in table]
            values = [0.0] + [row["cif"] for row in table]
            times.append(max(horizon, times[-1]))
            values.append(values[-1])
            ax.step(times, values, where="post", label=str(label))
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="upper left", fontsize=8)
        followed = _fitters(frame, "cr_duration", (frame["event_code"] != 0).astype(int))
        add_at_risk_counts(*followed, ax=ax, fig=fig, rows_to_show=["At risk"])
    return _render(fig)


def pir_plot(numbers: dict[str, Any], *, title: str, horizon: float) -> tuple[str, bytes]:
    """Probability of being in remission over time per group (multi-state Aalen–Johansen), with the
    mean time in remission to the horizon in the legend. Empty strings when it was not estimated."""
    pir = numbers.get("probability_in_remission") or {}
    if not pir.get("groups"):
        return "", b""
    fig, ax = _axes(title, "Probability in remission", horizon)
    with matplotlib.rc_context(_RC):
        for group in pir["groups"]:
            times = [0.0] + [s["time"] for s in group["curve"]] + [horizon]
            values = [0.0] + [s["in_remission"] or 0.0 for s in group["curve"]]
            values.append(values[-1])
            mean = group["mean_time_in_remission"]
            label = (
                f"{group['group'] or 'All'} (mean {mean:.0f} d in remission)" if mean is not None else group["group"]
            )
            ax.step(times, values, where="post", label=label)
        ax.legend(loc="upper right", fontsize=8)
    return _render(fig)
