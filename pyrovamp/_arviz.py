"""The one place that knows which ArviZ is installed (internal).

ArviZ 0.2x (Python 3.11: ``arviz.InferenceData``, ``arviz.psislw``, ``arviz.compare`` with a
``pandas.Series``-based ``ELPDData``, ``arviz.plot_compare`` / ``arviz.plot_khat`` on a matplotlib
axis) and ArviZ 1.x (Python 3.12+: ``arviz-base``, ``arviz-stats``, ``arviz-plots`` on
``xarray.DataTree``; ``arviz_stats.compare`` with a dataclass ``ELPDData`` holding ``elpd_i`` and
``pareto_k``; ``psislw`` smoothing the *negated* input; plots returning a ``PlotCollection``)
differ in names, sign conventions and return types. Every ArviZ call of pyrovamp goes through
the functions below, which take and return plain numpy arrays, ``xarray.Dataset`` objects,
``pandas.DataFrame`` tables and matplotlib ``Figure`` objects, the same on both majors.

Nothing here is public API; :mod:`pyrovamp.infer.diagnostics` and :mod:`pyrovamp.workflow` are.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings

import numpy as np

__all__ = [
    "arviz",
    "major",
    "psislw",
    "make_tree",
    "groups",
    "group",
    "is_tree",
    "compare",
    "plot_compare",
    "plot_khat",
    "MIN_PSIS_SAMPLES",
]

# Fewer draws than this leave fewer than 5 in the Pareto tail (ArviZ 1.x: floor(S/5) for
# S <= 225), where no generalised Pareto fit is possible: k-hat is then reported as +inf.
MIN_PSIS_SAMPLES = 25


@functools.cache
def arviz():
    """The ``arviz`` module, imported once without its once-a-day "undergoing a major
    refactor" FutureWarning (ArviZ 0.2x prints it on import; it is about ArviZ's own future,
    not about anything pyrovamp does)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning
        )
        import arviz as az
    return az


@functools.cache
def major() -> int:
    """The installed ArviZ's major version: 0 (InferenceData) or 1 (DataTree)."""
    return int(arviz().__version__.split(".")[0])


# --- Pareto-smoothed importance sampling ---------------------------------------------------------


def psislw(log_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed, normalised log-weights and the Pareto shape k-hat of each row
    (Vehtari et al. 2024, "Pareto smoothed importance sampling", JMLR 25(72), sec. 3).

    Args:
        log_weights: ``(N, S)`` float64 log importance weights (``S`` draws for each of ``N``
            targets), in the importance sampler's sign: large values are large weights.

    Returns:
        ``(smoothed, khat)``: ``(N, S)`` log-weights whose exponentials sum to 1 in each row, the
        right tail replaced by the fitted generalised Pareto quantiles (truncated at the largest
        raw weight); ``(N,)`` k-hat. With fewer than :data:`MIN_PSIS_SAMPLES` draws no tail can
        be fitted: the weights are only normalised and k-hat is ``inf``; a row whose largest
        weights are all equal (nothing to fit) is only normalised, with k-hat ``-inf``.

    ArviZ 0.2x's ``psislw`` smooths its input; ArviZ 1.x's smooths the *negated* input (it
    expects a log-likelihood, whose negation is the leave-one-out log-weight), so it gets
    ``-log_weights`` here. The tail length differs by at most one draw between the two
    (``ceil`` vs ``floor`` of ``3 sqrt(S)``), which moves k-hat in the second decimal at most.
    """
    from scipy.special import logsumexp

    lw = np.asarray(log_weights, dtype=np.float64)
    if lw.ndim != 2:
        raise ValueError(f"log_weights must be 2-D (N, S), got shape {lw.shape}")
    if lw.shape[1] < MIN_PSIS_SAMPLES:
        return lw - logsumexp(lw, axis=1, keepdims=True), np.full(lw.shape[0], np.inf)
    num_samples = lw.shape[1]
    tail = int(3 * math.sqrt(num_samples)) if num_samples > 225 else num_samples // 5
    top = np.sort(lw, axis=1)[:, -tail:]
    # a tail of equal weights (e.g. the exact posterior as proposal: every weight is p(x)) has
    # nothing to fit; ArviZ 1.x refuses it, 0.2x fits noise. Such weights are bounded: k = -inf.
    flat = (top[:, -1] - top[:, 0]) < np.finfo(float).tiny
    smoothed = lw - logsumexp(lw, axis=1, keepdims=True)
    khat = np.full(lw.shape[0], -np.inf)
    rows = ~flat
    if rows.any():
        with warnings.catch_warnings():
            # "Estimated shape parameter of Pareto distribution is greater than 0.7": the
            # caller reports k-hat against the sample-size dependent threshold instead
            warnings.filterwarnings("ignore", message=r"Estimated shape parameter of Pareto")
            if major() >= 1:
                from arviz_stats.base import array_stats

                sm, k = array_stats.psislw(-lw[rows], r_eff=1.0, axis=-1)
            else:
                sm, k = arviz().psislw(lw[rows].copy(), reff=1.0, normalize=True)
        smoothed[rows] = np.asarray(sm, dtype=np.float64)
        khat[rows] = np.asarray(k, dtype=np.float64)
    return smoothed, khat


# --- containers: InferenceData (0.2x) / DataTree (1.x) --------------------------------------------


def make_tree(datasets: dict, attrs: dict):
    """An ``arviz.InferenceData`` (0.2x) or ``xarray.DataTree`` (1.x) with one group per
    ``xarray.Dataset`` in ``datasets`` and ``attrs`` on the root."""
    if major() >= 1:
        import xarray as xr

        tree = xr.DataTree.from_dict({"/": xr.Dataset(attrs=dict(attrs)), **datasets})
        return tree
    with warnings.catch_warnings():
        # "the default dims 'chain' and 'draw' will be added automatically" / custom groups
        # outside ArviZ's schema: both intended here
        warnings.simplefilter("ignore", UserWarning)
        idata = arviz().InferenceData(**datasets)
    idata.attrs.update(attrs)
    return idata


def is_tree(obj) -> bool:
    """Whether ``obj`` is an ``InferenceData`` or a ``DataTree`` (either major)."""
    import xarray as xr

    if isinstance(obj, getattr(xr, "DataTree", ())):
        return True
    if major() >= 1:  # no InferenceData in 1.x (asking for it warns)
        return False
    return isinstance(obj, arviz().InferenceData)


def _is_datatree(obj) -> bool:
    import xarray as xr

    tree_class = getattr(xr, "DataTree", None)
    return tree_class is not None and isinstance(obj, tree_class)


def groups(obj) -> list[str]:
    """Group names of an ``InferenceData`` or the children of a ``DataTree``."""
    if _is_datatree(obj):
        return list(obj.children)
    return list(obj.groups())


def group(obj, name: str):
    """Group ``name`` as an ``xarray.Dataset`` (``KeyError`` when absent)."""
    if name not in groups(obj):
        raise KeyError(name)
    if _is_datatree(obj):
        return obj[name].to_dataset()
    return getattr(obj, name)


# --- model comparison ----------------------------------------------------------------------


def _elpd_data(elpd_i: np.ndarray, pareto_k: np.ndarray, num_samples: int, good_k: float):
    """An ``ELPDData`` of either major holding per-point values ``elpd_i`` (nats) and their
    k-hat, in the slots ``compare`` reads."""
    import xarray as xr

    n = elpd_i.size
    se = math.sqrt(n * elpd_i.var())
    warn = bool(np.any(pareto_k > good_k))
    elpd_da = xr.DataArray(elpd_i, dims=["obs"], coords={"obs": np.arange(n)}, name="elpd_i")
    k_da = xr.DataArray(pareto_k, dims=["obs"], coords={"obs": np.arange(n)}, name="pareto_k")
    if major() >= 1:
        from arviz_stats.utils import ELPDData

        return ELPDData(
            elpd=float(elpd_i.sum()),
            se=se,
            p=0.0,
            n_samples=int(num_samples),
            n_data_points=n,
            scale="log",
            warning=warn,
            good_k=float(good_k),
            elpd_i=elpd_da,
            pareto_k=k_da,
        )
    return arviz().ELPDData(
        data=[
            float(elpd_i.sum()),
            se,
            0.0,
            int(num_samples),
            n,
            warn,
            elpd_da.rename("loo_i"),
            k_da,
            "log",
            float(good_k),
        ],
        index=[
            "elpd_loo",
            "se",
            "p_loo",
            "n_samples",
            "n_data_points",
            "warning",
            "loo_i",
            "pareto_k",
            "scale",
            "good_k",
        ],
    )


def compare(pointwise: dict, pareto_k: dict, num_samples: dict, good_k: dict):
    """ArviZ's model comparison of per-data-point values (``compare(..., method="stacking")``).

    Args:
        pointwise: ``{name: (N,) array}`` per-data-point log-likelihoods (nats), same points.
        pareto_k, num_samples, good_k: ``{name: (N,) k-hat}``, ``{name: S}``, ``{name: threshold}``.

    Returns:
        ``pandas.DataFrame`` indexed by name, best first, columns ``rank`` (0 = best),
        ``elpd`` (sum), ``se`` (its standard error), ``elpd_diff`` (best minus this model, >= 0:
        the 0.2x sign; 1.x reports this model minus the best and is negated here), ``dse``
        (standard error of the difference from the paired per-point differences), ``weight``
        (stacking weight), ``warning`` (some k-hat above the model's threshold). Unrounded.
    """
    import pandas as pd

    elpds = {
        k: _elpd_data(
            np.asarray(pointwise[k], dtype=np.float64),
            np.asarray(pareto_k[k], dtype=np.float64),
            num_samples[k],
            good_k[k],
        )
        for k in pointwise
    }
    with warnings.catch_warnings():
        # 0.2x calls sort_values(inplace=True), deprecated by pandas 3.1: ArviZ's own code
        warnings.filterwarnings("ignore", message=r"The inplace keyword in DataFrame.sort_values")
        if major() >= 1:
            from arviz_stats import compare as az_compare

            raw = az_compare(elpds, method="stacking", round_to="none")
            diff = -raw["elpd_diff"].astype(float)
        else:
            raw = arviz().compare(elpds, ic="loo", method="stacking", scale="log")
            raw = raw.rename(columns={"elpd_loo": "elpd"})
            diff = raw["elpd_diff"].astype(float)
    table = pd.DataFrame(
        {
            "rank": raw["rank"].astype(int),
            "elpd": raw["elpd"].astype(float),
            "se": raw["se"].astype(float),
            "elpd_diff": diff.abs(),  # -0.0 for the best model -> 0.0
            "dse": raw["dse"].astype(float),
            "weight": raw["weight"].astype(float),
            "warning": [bool(elpds[k].warning) for k in raw.index],
        },
        index=raw.index,
    )
    return table


# --- figures -------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_plotting():
    """Silence what ArviZ's plotting code warns about its own use of pandas and matplotlib
    (deprecations inside ArviZ; nothing the caller can change)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The inplace keyword in DataFrame.sort_values")
        warnings.filterwarnings("ignore", message=r"Passing a dict or None as alias_mapping")
        yield


def _figure_of(plot_collection):
    """The matplotlib ``Figure`` behind an arviz-plots ``PlotCollection``."""
    viz = plot_collection.viz
    fig = viz["figure"]
    fig = getattr(fig, "values", fig)
    return fig.item() if hasattr(fig, "item") else fig


def plot_compare(table):
    """ArviZ's comparison plot of a table from :func:`compare` (its ``elpd``, ``se``,
    ``elpd_diff``, ``dse`` columns); returns the matplotlib ``(Figure, Axes)``. Both majors show
    the difference of every model to the best with its paired standard error (1.x on the
    difference scale, 0.2x beside each model's total)."""
    if major() >= 1:
        from arviz_plots import plot_compare as az_plot_compare

        df = table.copy()
        df["elpd_diff"] = -df["elpd_diff"]  # 1.x: model minus best
        with _quiet_plotting():
            pc = az_plot_compare(
                df,
                relative_scale=True,
                backend="matplotlib",
                figure_kwargs={"figsize": (7, 0.6 * len(df) + 2)},
            )
        fig = _figure_of(pc)
        ax = fig.axes[0]
    else:
        from matplotlib.figure import Figure

        df = table.rename(columns={"elpd": "elpd_loo"})
        df["p_loo"] = 0.0
        df["scale"] = "log"
        fig = Figure(figsize=(7, 0.6 * len(df) + 2))
        ax = fig.add_subplot(111)
        with _quiet_plotting():
            arviz().plot_compare(df, ax=ax, insample_dev=False, plot_ic_diff=True, legend=False)
    return fig, ax


def plot_khat(pareto_k: dict, threshold: dict):
    """ArviZ's k-hat plot, one panel per model: ``{name: (N,) k-hat}`` with each model's
    threshold as a horizontal line; returns the matplotlib ``Figure`` and ``{name: Axes}``."""
    names = list(pareto_k)
    if major() >= 1:
        import xarray as xr
        from arviz_plots import plot_khat as az_plot_khat

        n = len(next(iter(pareto_k.values())))
        k = xr.DataArray(
            np.stack([np.asarray(pareto_k[m], dtype=float) for m in names]),
            dims=["model", "obs"],
            coords={"model": names, "obs": np.arange(n)},
        )
        elpd = _elpd_data(np.zeros(n), k.isel(model=0).values, 1, max(threshold.values()))
        elpd.pareto_k = k
        hl = sorted({0.0, *threshold.values(), 1.0})
        cols = min(3, len(names))
        with _quiet_plotting():
            pc = az_plot_khat(
                elpd,
                cols=["model"],
                col_wrap=cols,
                backend="matplotlib",
                hline_values=hl,
                visuals={"hlines": {}},
                figure_kwargs={"figsize": (5 * cols, 3.4 * math.ceil(len(names) / cols))},
            )
        fig = _figure_of(pc)
        axes = {m: pc.get_target(None, {"model": m}) for m in names}
        for ax in axes.values():
            legend = ax.get_legend()
            if legend is not None:
                legend.remove()
        for legend in fig.legends:  # one colour per panel, the panel's title names it
            legend.remove()
        return fig, axes
    from matplotlib.figure import Figure

    az = arviz()
    rows, cols = math.ceil(len(names) / 3), min(3, len(names))
    fig = Figure(figsize=(5 * cols, 3.2 * rows))
    axes = {}
    for i, m in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        khat = np.asarray(pareto_k[m], dtype=float)
        with _quiet_plotting():
            az.plot_khat(
                _elpd_data(np.zeros(khat.size), khat, 1, threshold[m]),
                ax=ax,
                show_hlines=True,
                hlines_kwargs={"hlines": [threshold[m]]},
            )
        axes[m] = ax
    return fig, axes
