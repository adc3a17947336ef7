"""Summaries over seeds, the printed table and the plot."""
import math

import numpy as np

# The per-run figures summarised over seeds (mean and sample std).
SUMMARISED = ("eval_accuracy", "eval_loss", "final_train_loss", "median_step_ms",
              "median_train_step_ms", "mean_step_ms", "mean_train_step_ms", "train_seconds",
              "state_bytes", "trainable_parameters")


def mean_std(values):
    """Mean and sample standard deviation (n - 1); std is None for one value."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    if len(values) < 2:
        return {"mean": mean, "std": None, "n": len(values)}
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return {"mean": mean, "std": math.sqrt(var), "n": len(values)}


def summarise(runs):
    """{figure: mean_std over the runs (one per seed)} for SUMMARISED."""
    return {key: mean_std([r[key] for r in runs]) for key in SUMMARISED}


def moving_average(values, window):
    window = max(1, min(window, len(values)))
    c = np.cumsum(np.insert(np.asarray(values, dtype=float), 0, 0.0))
    out = (c[window:] - c[:-window]) / window
    head = [c[i + 1] / (i + 1) for i in range(window - 1)]
    return np.concatenate([head, out])


def pm(s, scale=1.0, digits=1):
    """"mean ± std" of a mean_std (just the mean for one value)."""
    text = f"{scale * s['mean']:.{digits}f}"
    return text if s["std"] is None else f"{text} ± {scale * s['std']:.{digits}f}"


def table(results, eval_name="held-out"):
    """Plain-text table of `results` ({method: {"label", "lr", "summary"}})."""
    base = results.get("adamw")
    rows = [("method", "lr", f"{eval_name} acc %", "final train loss", "state bytes", "vs AdamW",
             "trainable params", "opt.step ms", "train step ms")]
    for r in results.values():
        s = r["summary"]
        ratio = f"{s['state_bytes']['mean'] / base['summary']['state_bytes']['mean']:.3f}" if base else "-"
        rows.append((r["label"], f"{r['lr']:.0e}", pm(s["eval_accuracy"], 100), pm(s["final_train_loss"], 1, 4),
                     f"{s['state_bytes']['mean']:,.0f}", ratio, f"{s['trainable_parameters']['mean']:,.0f}",
                     pm(s["median_step_ms"]), pm(s["median_train_step_ms"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results, eval_name="held-out"):
    """The table of `table`, in Markdown (for the README)."""
    base = results["adamw"]["summary"]["state_bytes"]["mean"] if "adamw" in results else None
    lines = [f"| method | lr | {eval_name} acc % | final train loss | state bytes | vs AdamW | "
             "trainable params | `opt.step()` ms | train step ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results.values():
        s = r["summary"]
        ratio = f"{s['state_bytes']['mean'] / base:.3f}" if base else "-"
        lr = f"{r['lr']:.0e}".replace("e-0", "e-")
        lines.append(f"| {r['label']} | {lr} | {pm(s['eval_accuracy'], 100)} | "
                     f"{pm(s['final_train_loss'], 1, 4)} | {s['state_bytes']['mean']:,.0f} | {ratio} | "
                     f"{s['trainable_parameters']['mean']:,.0f} | {pm(s['median_step_ms'])} | "
                     f"{pm(s['median_train_step_ms'])} |")
    return "\n".join(lines)


def plot(results, path, smooth, title, eval_name="held-out"):
    """Each method's mean training loss (moving average of `smooth` steps)
    with a band of ± one standard deviation across seeds, and its mean
    accuracy on the evaluated set with the same spread as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    lowest = 100.0
    for r in results.values():
        curves = np.array([moving_average(run["train_losses"], smooth) for run in r["runs"]])
        steps = np.arange(1, curves.shape[1] + 1)
        mean = curves.mean(0)
        line, = ax1.plot(steps, mean, label=r["label"], linewidth=1.3)
        # Step 0 (before training, the same for all) is left out: on its
        # scale the differences between the methods would not show.
        acc = 100 * np.array([[e["accuracy"] for e in run["evals"][1:]] for run in r["runs"]])
        eval_steps = [e["step"] for e in r["runs"][0]["evals"][1:]]
        lowest = min(lowest, float(acc.min()))
        if len(r["runs"]) > 1:
            spread = curves.std(0, ddof=1)
            ax1.fill_between(steps, mean - spread, mean + spread, color=line.get_color(), alpha=0.18)
            ax2.errorbar(eval_steps, acc.mean(0), yerr=acc.std(0, ddof=1), marker="o", capsize=3,
                         label=r["label"], color=line.get_color())
        else:
            ax2.plot(eval_steps, acc.mean(0), marker="o", label=r["label"], color=line.get_color())
    n = {len(r["runs"]) for r in results.values()}
    seeds = f"mean of {max(n)} seeds, band ± 1 std" if max(n) > 1 else "one seed"
    ax1.set(xlabel="step", ylabel=f"training loss (moving average, {smooth} steps)",
            title=f"Training loss ({seeds})")
    ax2.set(xlabel="step", ylabel=f"{eval_name} accuracy (%)", title=f"{eval_name.capitalize()} accuracy (after step 0)")
    ax2.set_ylim(max(0.0, lowest - 2), 100)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
