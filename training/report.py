"""Outputs of an evaluation run: the markdown table and page, the two plots, results.json and reading it back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from search.service import MAX_LIMIT, MAX_QUERY_CHARS
from training.evaluation import EvalResult
from training.metrics import METRIC_LABELS, METRICS


def markdown_table(result: EvalResult) -> str:
    """One row per system: the three metrics, nDCG@10 change vs BM25 (mean, wins/losses), search speed."""
    head = (
        "| system | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " | ΔnDCG@10 vs BM25 | W / L / T | ms/query |"
    )
    lines = [head, "|" + "---|" * (len(METRICS) + 4)]
    for s in result.systems:
        if s.status != "ok":
            lines.append(f"| {s.name} | " + " | ".join("—" for _ in METRICS) + f" | not run: {s.reason} | | |")
            continue
        d = s.delta_summary
        delta = f"{d.mean:+.4f}" if d else "—"
        wlt = f"{d.wins} / {d.losses} / {d.ties}" if d else "—"
        vals = " | ".join(f"{s.metrics[m]:.4f}" for m in METRICS)
        lines.append(f"| {s.name} | {vals} | {delta} | {wlt} | {s.ms_per_query:.1f} |")
    return "\n".join(lines)


def render_markdown(result: EvalResult) -> str:
    b, q = result.build, result.query_encoding
    r = result.retrieval
    parts = [
        f"# {result.dataset} ({result.split}) on {result.store}",
        "",
        f"{result.n_queries} judged queries ({result.queries_without_qrels} without relevant documents skipped"
        + (
            f"; {result.truncated_queries} cut to {MAX_QUERY_CHARS} characters (bm25-reference reads them whole)"
            if result.truncated_queries
            else ""
        )
        + f"), model `{result.model}`, index `{result.index}`, RRF k={r.rrf_k}, linear α={r.alpha}, "
        f"depth {r.depth}. Ranking via `SearchService.search` (limit {MAX_LIMIT}, no highlights).",
        "",
        markdown_table(result),
        "",
        "W / L / T: queries where nDCG@10 is above / below / equal to BM25's.",
        "",
        "## Timings",
        "",
        f"- index build: {b.seconds:.1f} s ({b.indexed} docs, {b.chunks} chunks, max_chunks={b.max_chunks}; "
        f"{b.encoded} chunks encoded in {b.encode_seconds:.1f} s, {b.cache_hits} from the cache)"
        if b.rebuilt
        else "- index build: reused the existing index",
        f"- query encoding: {q.seconds:.1f} s ({q.encoded} encoded, {q.cache_hits} from the cache)",
        *(
            f"- {s.name}: {s.search_seconds:.1f} s searching ({s.ms_per_query:.1f} ms/query)"
            for s in result.systems
            if s.status == "ok"
        ),
        f"- total: {result.seconds:.1f} s",
        "",
        "![metrics](metrics.png)",
        "",
        "![per-query nDCG@10 deltas vs BM25](deltas.png)",
        "",
    ]
    return "\n".join(parts)


def plot_metrics(result: EvalResult, path: Path) -> None:
    """Grouped bars: one group per metric, one bar per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [s for s in result.systems if s.status == "ok"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(1, len(ok))
    x = np.arange(len(METRICS))
    for i, s in enumerate(ok):
        vals = [s.metrics[m] for m in METRICS]
        bars = ax.bar(x + (i - (len(ok) - 1) / 2) * width, vals, width, label=s.name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    ax.set_xticks(x, [METRIC_LABELS[m] for m in METRICS])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("score")
    ax.set_title(f"{result.dataset} ({result.store}, {result.n_queries} queries)")
    ax.legend(fontsize=8, loc="upper left", ncols=min(3, max(1, len(ok))))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_deltas(result: EvalResult, path: Path) -> None:
    """Histogram of per-query nDCG@10 minus BM25's, one panel per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s for s in result.systems if s.status == "ok" and s.delta_vs_bm25]
    n = max(1, len(systems))
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), sharey=True, squeeze=False)
    bins = np.linspace(-1.025, 1.025, 42)  # width 0.05, centred on 0 so ties sit on the axis line
    for ax, s in zip(axes[0], systems, strict=False):
        vals = list(s.delta_vs_bm25.values())
        ax.hist(vals, bins=bins, color="tab:blue", edgecolor="white")
        ax.axvline(0, color="black", linewidth=0.8)
        d = s.delta_summary
        ax.set_title(f"{s.name}\nmean {d.mean:+.3f}, W/L {d.wins}/{d.losses}" if d else s.name, fontsize=9)
        ax.set_xlabel("ΔnDCG@10 vs BM25")
    if not systems:
        axes[0][0].text(0.5, 0.5, "no system to compare with BM25", ha="center", va="center")
    axes[0][0].set_ylabel("queries")
    fig.suptitle(f"{result.dataset} ({result.store})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: EvalResult, out: Path) -> dict[str, Path]:
    """results.json, results.md, metrics.png and deltas.png under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "md": out / "results.md",
        "metrics_png": out / "metrics.png",
        "deltas_png": out / "deltas.png",
    }
    paths["json"].write_text(result.model_dump_json(indent=2))
    paths["md"].write_text(render_markdown(result))
    plot_metrics(result, paths["metrics_png"])
    plot_deltas(result, paths["deltas_png"])
    return paths


def load_result(path: Path) -> EvalResult:
    return EvalResult.model_validate_json(Path(path).read_text())
