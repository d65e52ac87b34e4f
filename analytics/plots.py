"""Kaplan–Meier and cumulative-incidence plots with the numbers at risk underneath, as SVG text and
PNG bytes. Rendered on matplotlib's Agg canvas with ``Figure`` objects (no pyplot state), and with
fixed SVG ids and no timestamps, so the same numbers always give the same files.

The numbers at risk are the ones the analysis stored (``numbers["at_risk"]``: followed to at least
that day, R's rule), not lifelines' ``add_at_risk_counts``, which counts those still at risk just
*after* each tick: participants whose time is 0 (an event at the origin) vanished from its day-0
column, which then disagreed with the N of the tables.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless workers; must precede lifelines.plotting, which imports pyplot

import pandas as pd  # noqa: E402
from lifelines import KaplanMeierFitter  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

_RC = {"svg.hashsalt": "tolerance", "svg.fonttype": "path", "font.size": 9}
_ROW_HEIGHT = 0.075  # of the axes' height, per line of the at-risk table


def _render(fig: Figure) -> tuple[str, bytes]:
    FigureCanvasAgg(fig)
    svg, png = io.StringIO(), io.BytesIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(svg, format="svg", metadata={"Date": None}, bbox_inches="tight")
        fig.savefig(png, format="png", dpi=110, metadata={"Software": None}, bbox_inches="tight")
    return svg.getvalue(), png.getvalue()


def _axes(title: str, ylabel: str, numbers: dict[str, Any]) -> tuple[Figure, Any]:
    axis = float(numbers["axis_days"])
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.5, 4.8))
        ax = fig.add_subplot(111)
        ax.set_title(title)
        ax.set_xlabel("Days since infusion")
        ax.set_ylabel(ylabel)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0, max(axis, 30))
        ax.set_xticks(numbers["at_risk"]["days"])
        ax.grid(alpha=0.3)
    return fig, ax


def _at_risk_rows(ax, days: list[float], rows: list[dict[str, Any]], heading: str) -> None:
    """The at-risk table under the axis: a heading, then one line per group (in the curves' colours),
    each count centred under its tick."""
    under = blended_transform_factory(ax.transData, ax.transAxes)
    top = -0.17  # below the tick labels and the axis label
    ax.text(0, top, heading, transform=ax.transAxes, ha="left", va="top", fontsize=8, fontweight="bold")
    for i, row in enumerate(rows):
        y = top - _ROW_HEIGHT * (i + 1)
        colour = f"C{i}"
        ax.text(-0.02, y, str(row["group"]), transform=ax.transAxes, ha="right", va="top", fontsize=8, color=colour)
        for day, count in zip(days, row["counts"], strict=True):
            ax.text(day, y, str(count), transform=under, ha="center", va="top", fontsize=8, color=colour)


def km_plot(frame: pd.DataFrame, numbers: dict[str, Any], *, title: str) -> tuple[str, bytes]:
    """KM curves per group (censoring marks) with the numbers at risk below the axis."""
    fig, ax = _axes(title, "Probability relapse-free", numbers)
    with matplotlib.rc_context(_RC):
        for i, label in enumerate(sorted(frame["group"].unique())):
            rows = frame["group"] == label
            fitter = KaplanMeierFitter(label=str(label)).fit(frame.loc[rows, "duration"], frame.loc[rows, "event"])
            fitter.plot_survival_function(
                ax=ax, ci_show=False, show_censors=True, censor_styles={"ms": 4}, color=f"C{i}"
            )
        ax.set_xlim(0, max(float(numbers["axis_days"]), 30))
        ax.set_xlabel("Days since infusion")  # lifelines relabels the axis "timeline"
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
        _at_risk_rows(ax, numbers["at_risk"]["days"], numbers["at_risk"]["kaplan_meier"], "Number at risk")
    return _render(fig)


def cif_plot(frame: pd.DataFrame, numbers: dict[str, Any], *, title: str) -> tuple[str, bytes]:
    """Aalen–Johansen cumulative incidence of relapse per group, with the numbers still followed
    (not yet relapsed, dead, retreated or censored) below the axis."""
    fig, ax = _axes(title, "Cumulative incidence of relapse", numbers)
    axis = float(numbers["axis_days"])
    with matplotlib.rc_context(_RC):
        for i, label in enumerate(sorted(frame["group"].unique())):
            cif = numbers["cumulative_incidence"].get(label) or {}
            table = cif.get("table") or []
            times = [0.0] + [row["time"] for row in table]
            values = [0.0] + [row["cif"] for row in table]
            # Drawn to the group's last observation only: past it the curve is not estimated.
            last = (numbers["summary"].get(label) or {}).get("last_observation_cr_days") or axis
            times.append(max(min(axis, last), times[-1]))
            values.append(values[-1])
            ax.step(times, values, where="post", label=str(label), color=f"C{i}")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="upper left", fontsize=8)
        _at_risk_rows(ax, numbers["at_risk"]["days"], numbers["at_risk"]["cumulative_incidence"], "Still followed")
    return _render(fig)


def pir_plot(numbers: dict[str, Any], *, title: str) -> tuple[str, bytes]:
    """Probability of being in remission over time per group (multi-state Aalen–Johansen) to the
    RMST horizon τ, with the mean time in remission to τ in the legend. Empty strings when it was not
    estimated."""
    pir = numbers.get("probability_in_remission") or {}
    if not pir.get("groups"):
        return "", b""
    horizon = float(numbers["horizon_days"])
    fig, ax = _axes(title, "Probability in remission", numbers)
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
