"""The tables, plot and findings of ``bench/privacy.py`` (``docs/results/privacy.md``), from its
records alone: one per run, as ``privacy_results.json`` holds them."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedmap.schema import Federation

Record = Mapping[str, Any]
CLEAR = "clear"
"""At epsilon = inf: the (N_k, D_k) release of secure aggregation, summed in the clear (no
encryption): what separates CKKS's rounding from what the release itself changes."""
SECURE_LABELS = {"none": "off", "ckks": "CKKS", CLEAR: "off, release path"}
TITLES = {"heart_disease": "Fed-Heart-Disease", "tcga_brca": "Fed-TCGA-BRCA"}


def eps_label(epsilon: float) -> str:
    return "inf" if math.isinf(epsilon) else f"{epsilon:g}"


# ---- tables ----------------------------------------------------------------------------------


def primary(record: Record, site: str) -> float:
    return float(record["sites"][site][record["metric"]])


def site_mean(record: Record) -> float:
    return statistics.fmean(primary(record, s) for s in record["sites"])


def by_config(rows: Sequence[Record], name: str) -> dict[str, list[Record]]:
    """config key -> its runs (in seed order), for one federation, in the order they were run."""
    out: dict[str, list[Record]] = defaultdict(list)
    for r in rows:
        if r["federation"] == name:
            out[r["config"]].append(r)
    return {k: sorted(v, key=lambda r: int(r["seed"])) for k, v in out.items()}


def ms(values: Sequence[float], scale: float = 1.0, digits: int = 4) -> str:
    mean = statistics.fmean(values) * scale
    sd = (statistics.stdev(values) if len(values) > 1 else 0.0) * scale
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def describe(first: Record) -> tuple[str, str]:
    """The epsilon and secure-aggregation cells of a configuration."""
    if first["method"] == "individual":
        return "-", "local only"
    secure = SECURE_LABELS[first["secure_aggregation"]]
    if not first.get("widened", True):
        secure += ", prior not widened"
    eps = "inf (no DP)" if first["epsilon"] == "inf" else first["epsilon"]
    return eps, secure


def utility_table(rows: Sequence[Record], name: str) -> str:
    """Table 1: the mean over sites, mean ± sd over seeds, with the plan's z and epsilon."""
    groups = by_config(rows, name)
    local = statistics.fmean(site_mean(r) for r in groups.get("local", []) or [{}])
    metric = next(iter(groups.values()))[0]["metric"]
    lines = [
        f"| epsilon | secure aggregation | mean {metric} over sites | vs local | weights "
        "| z | epsilon (accountant) | tau^2 after the last round |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, runs in groups.items():
        eps, secure = describe(runs[0])
        means = [site_mean(r) for r in runs]
        gain = statistics.fmean(means) - local
        spent = runs[0]["epsilon_spent"]
        z, weights = runs[0]["noise_multiplier"], runs[0]["weights"]
        if key == "local":
            lines.append(f"| - | local only | **{ms(means)}** | - | - | - | - | - |")
            continue
        lines.append(
            f"| {eps} | {secure} | **{ms(means)}** | {gain:+.4f} | {weights} | "
            f"{z:.3f} | {'-' if spent is None else f'{spent:.3f}'} | "
            f"{statistics.fmean(r['tau2'] for r in runs):.3g} |"
        )
    return "\n".join(lines)


def gain_table(rows: Sequence[Record], name: str) -> str:
    """Table 2: each site's mean score over seeds and its gain over its local model, in points
    (hundredths of accuracy or of C-index); a site below its local model is in bold."""
    groups = by_config(rows, name)
    local_runs = groups["local"]
    sites = list(local_runs[0]["sites"])
    local = {s: statistics.fmean(primary(r, s) for r in local_runs) for s in sites}
    lines = [
        "| epsilon | secure aggregation | " + " | ".join(sites) + " | sites below local |",
        "|---|---|" + "---|" * (len(sites) + 1),
    ]
    for key, runs in groups.items():
        eps, secure = describe(runs[0])
        cells, below = [], 0
        for s in sites:
            score = statistics.fmean(primary(r, s) for r in runs)
            gain = 100 * (score - local[s])
            low = key != "local" and gain < -1e-9
            below += low
            text = f"{score:.4f}" if key == "local" else f"{score:.4f} ({gain:+.2f})"
            cells.append(f"**{text}**" if low else text)
        count = "-" if key == "local" else str(below)
        lines.append(f"| {eps} | {secure} | " + " | ".join(cells) + f" | {count} |")
    return "\n".join(lines)


def differences(rows: Sequence[Record], name: str) -> dict[str, dict[str, float]]:
    """epsilon -> the largest |score| difference, over seeds, sites and every metric, between
    CKKS and the same release summed in the clear (``rounding``), and at epsilon = inf between
    CKKS and plain FedMAP (``vs_plain``)."""
    groups = by_config(rows, name)
    out: dict[str, dict[str, float]] = {}
    for key, runs in groups.items():
        if not key.endswith("/ckks"):
            continue
        eps = runs[0]["epsilon"]
        clear = groups.get(f"eps={eps}/{CLEAR}" if eps == "inf" else f"eps={eps}/none")
        plain = groups.get(f"eps={eps}/none") if eps == "inf" else None
        entry = {}
        for label, other in (("rounding", clear), ("vs_plain", plain)):
            if other is not None:
                entry[label] = max_difference(runs, other)
        out[eps] = entry
    return out


def max_difference(a: Sequence[Record], b: Sequence[Record]) -> float:
    pairs = {int(r["seed"]): r for r in b}
    worst = 0.0
    for r in a:
        other = pairs[int(r["seed"])]
        for site, scores in r["sites"].items():
            for metric, value in scores.items():
                worst = max(worst, abs(float(value) - float(other["sites"][site][metric])))
    return worst


def cost_table(rows: Sequence[Record], name: str) -> str:
    """Table 3: seconds per round, bytes each site sends per round, peak memory of the run."""
    lines = [
        "| epsilon | secure aggregation | seconds per round | bytes sent per site per round "
        "| peak memory (MB) | of which before round 1 (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for runs in by_config(rows, name).values():
        eps, secure = describe(runs[0])
        sent = statistics.fmean(r["bytes_per_site_round"] for r in runs)
        lines.append(
            f"| {eps} | {secure} | {ms([r['seconds_per_round'] for r in runs], digits=3)} | "
            f"{sent:,.0f} | {max(r['peak_mb'] for r in runs):.0f} | "
            f"{max(r['baseline_mb'] for r in runs):.0f} |"
        )
    return "\n".join(lines)


def metrics_of(rows: Sequence[Record], seconds: float) -> dict[str, Any]:
    """DVC metrics: each configuration's mean over seeds and sites, and the CKKS differences."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["federation"] for r in rows):
        groups = by_config(rows, name)
        out[name] = {
            "mean": {k: statistics.fmean(site_mean(r) for r in v) for k, v in groups.items()},
            "ckks_difference": differences(rows, name),
        }
    out["seconds"] = round(seconds, 1)
    return out


SERIES = (
    ("none", True, "o-", 1.0, "FedMAP, secure aggregation off"),
    ("ckks", True, "s--", 1.06, "FedMAP, CKKS"),
    ("none", False, "^:", 0.94, "FedMAP, prior not widened (ablation)"),
)
"""The plot's lines: (secure aggregation, widened, style, shift along epsilon, label)."""


def plot(rows: Sequence[Record], path: Path) -> None:
    """Utility against epsilon, one panel per federation: FedMAP with secure aggregation off and
    on (mean ± sd over seeds), and the local-only model as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["federation"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        groups = by_config(rows, name)
        finite = sorted({float(r["epsilon"]) for r in rows if r["epsilon"] != "inf"})
        at_inf = 2 * max(finite) if finite else 1.0
        for secure, widened, style, shift, label in SERIES:
            xs, ys, sds = [], [], []
            for key, runs in groups.items():
                run = runs[0]
                if key == "local" or (run["secure_aggregation"], run["widened"]) != (
                    secure,
                    widened,
                ):
                    continue
                eps = runs[0]["epsilon"]
                means = [site_mean(r) for r in runs]
                xs.append((at_inf if eps == "inf" else float(eps)) * shift)
                ys.append(statistics.fmean(means))
                sds.append(statistics.stdev(means) if len(means) > 1 else 0.0)
            ax.errorbar(xs, ys, yerr=sds, fmt=style, capsize=3, label=label, ms=5)
        if "local" in groups:
            local = [site_mean(r) for r in groups["local"]]
            mean = statistics.fmean(local)
            sd = statistics.stdev(local) if len(local) > 1 else 0.0
            ax.axhline(mean, color="k", lw=1, label="local only")
            ax.axhspan(mean - sd, mean + sd, color="k", alpha=0.1, lw=0)
        ax.set_xscale("log")
        ticks = [*finite, at_inf]
        ax.set_xticks(ticks, [f"{t:g}" for t in finite] + ["inf"])
        ax.minorticks_off()
        ax.set_xlabel("epsilon (client level, delta = 1e-5)")
        metric = next(iter(groups.values()))[0]["metric"]
        ax.set_ylabel(f"mean {metric.replace('_', '-')} over sites")
        ax.set_title(TITLES.get(name, name))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


# ---- the page --------------------------------------------------------------------------------


def section(rows: Sequence[Record], spec: Federation) -> str:
    name, algo = spec.name, spec.algorithm
    sites = len(spec.tier(1))
    first = next(r for r in rows if r["federation"] == name)
    rounds = first["rounds"]
    points = "percentage points" if first["metric"] == "accuracy" else "C-index points (x 100)"
    diff = differences(rows, name)
    rounding = max((d.get("rounding", 0.0) for d in diff.values()), default=0.0)
    rounding_text = (
        "CKKS's rounding of the sum changes no score here" if rounding == 0 else "CKKS's rounding"
    )
    plain = diff.get("inf", {}).get("vs_plain")
    plain_text = (
        ""
        if plain is None
        else (
            f" At epsilon = inf, CKKS against plain FedMAP (theta_k and log omega_k in the clear) "
            f"differs by up to {plain:.2g}."
        )
    )
    return f"""## {TITLES.get(name, name)}

{sites} sites, {rounds} rounds of {algo.epochs} local epoch(s), batch size {algo.batch_size},
Adam with lr {algo.lr}, sigma^2 = {algo.variance} (the file's own budget, `federations/{name}.yaml`);
the local-only model trains {rounds * algo.epochs} epochs.

**Utility.** Mean over sites of each site's own test {first["metric"]}, mean ± sd over seeds; z is the
noise multiplier the plan calibrated to the budget over {rounds} rounds, epsilon (accountant) what
Opacus's RDP accountant reports for that z over the run (`fedmap.privacy.plan_epsilon`), tau^2 the
variance the sites added to their prior's (`PrivateFedMAP.widened`). 'Release path': the (N_k, D_k)
that CKKS encrypts, sent in the clear; 'prior not widened': the ablation, sites training under
N(mu, sigma^2) as if the noisy mean were exact.

{utility_table(rows, name)}

**Per site.** Each site's mean score over seeds and, in brackets, its gain over its own local
model in {points}; bold: below its local model.

{gain_table(rows, name)}

Secure aggregation on and off at the same seed: the largest difference over seeds, sites and
every metric between CKKS and the same release summed in the clear is {rounding:.2g}
({rounding_text}).{plain_text}

**Cost per round.** Mean ± sd over seeds of the seconds per round (local training, release,
encryption, aggregation and evaluation of every site, one process on one core); the bytes each
site uploads per round (float32 tensors and one 8-byte scalar in the clear, or the serialised
CKKS ciphertext); the largest peak resident memory over seeds of a run's own process, and of that
the part reached before round 1 (Python, torch, the data).

{cost_table(rows, name)}
"""


def page(rows: Sequence[Record], specs: Sequence[Federation], seconds: float, args: Any) -> str:
    seeds = sorted({int(r["seed"]) for r in rows})
    parts = "\n".join(section(rows, s) for s in specs)
    return f"""# What privacy costs FedMAP: client-level DP and secure aggregation

Generated by `dvc repro privacy` (`bench/privacy.py`) in {seconds / 60:.1f} min on 2 CPU cores
({len(rows)} runs, each in its own process, {args.jobs} at a time). Do not edit by hand.
Epsilons {args.epsilons}, seeds {seeds}.

**What epsilon means here.** The guarantee is client level: two federations are neighbours if
one has a whole site's dataset more than the other, so epsilon bounds what anything a site sends
reveals about whether that hospital took part at all, not only about one of its patients. Each
round every site clips its step theta_k - mu to norm C = 1 and adds Gaussian noise of standard
deviation z C before it leaves the site (`fedmap.dp`); under DP the weights are equal, fixed in
advance, so one round is one Gaussian mechanism. Every site takes part in every round (sampling
rate q = 1, so no amplification by subsampling) and the rounds compose: z is the smallest noise
multiplier for which Opacus's RDP accountant gives epsilon(delta = 1e-5) within the budget after
the whole run. The guarantee holds for each message alone, so it does not depend on the centre's
honesty; CKKS secure aggregation (`fedmap.secure`, TenSEAL) additionally hides each site's noisy
message from the centre, which only adds ciphertexts; the sites decrypt the sum.

{parts}
{findings(rows, specs)}
"""


def findings(rows: Sequence[Record], specs: Sequence[Federation]) -> str:
    """What the tables say, from their numbers: utility against the local model at each
    epsilon and its tau, and what secure aggregation costs."""
    lines = [dataset_finding(rows, spec) for spec in specs]
    return f"""## Findings

{chr(10).join(line for line in lines if line)}

Client-level DP with 4-6 sites is expensive: every site must hide its whole dataset, so the noise
each adds has standard deviation z C in every coordinate against a clipped step of norm at most
C in all of them together, and the mean of K releases only divides that by sqrt(K). The prior mean each site trains
towards is therefore mostly noise, of per-coordinate variance tau^2 summed over the rounds. Under
DP each site widens its prior by that variance (N(mu, sigma^2 + tau^2),
`PrivateFedMAP.widened`), which is meant to make FedMAP degrade towards the local model as the
budget tightens instead of collapsing onto the noise: the mean is off by about tau, so its pull on
a site's weights weakens roughly like 1 / tau. Until tau is large against the scale of the model's
weights the widened prior still pulls each site some way towards a wrong mean, which can put
FedMAP below the site's own model, so a larger epsilon (less noise, a smaller tau) is not
necessarily better. The ablation rows (prior not widened) measure what the widening buys; the
lines above say, per dataset, how far it gets.

{cost_finding(rows)}

## Notes

- Seconds per round are measured two processes at a time on a 2-core machine, secure
  aggregation on and off of each seed submitted together; they include each site's local
  training and the per-round evaluation, so their sd is the machine's as much as the method's.
  The CKKS key pair is made once per run, before round 1, and is not in them.
- epsilon = inf with secure aggregation off is plain FedMAP (theta_k and log omega_k in the
  clear). The 'release path' row sends in the clear the same (N_k, D_k) that CKKS encrypts, so
  CKKS's rounding can be told apart from any effect of the release itself (the clamp of log omega
  to [-R, 0] and the denominator's floor).
- Under DP the weights are equal (`weights: auto`): with omega weights the noise on sum_k D_k is
  of the order of the sum itself at these sizes ([docs/privacy.md](../privacy.md)).
"""


def dataset_finding(rows: Sequence[Record], spec: Federation) -> str:
    """One line: each epsilon's mean, its gain over the local model, its tau, and the sites it
    leaves below their local model."""
    groups = by_config(rows, spec.name)
    if "local" not in groups:
        return ""
    mean = {k: statistics.fmean(site_mean(r) for r in v) for k, v in groups.items()}
    unit = "pp" if groups["local"][0]["metric"] == "accuracy" else "C-index points"
    local, parts, kept = mean["local"], [], []
    for key, runs in groups.items():
        if not key.endswith("/none"):
            continue
        eps = runs[0]["epsilon"]
        tau = math.sqrt(statistics.fmean(r["tau2"] for r in runs))
        label = (
            "no DP"
            if eps == "inf"
            else f"epsilon {eps} (z {runs[0]['noise_multiplier']:.2f}, tau {tau:.1f})"
        )
        parts.append(
            f"{label}: {mean[key]:.4f} ({100 * (mean[key] - local):+.1f} {unit}, "
            f"{gain_counts(groups, key)} of {len(spec.tier(1))} sites below local)"
        )
        if eps != "inf" and mean[key] >= local:
            kept.append(eps)
    ablation = [
        f"epsilon {runs[0]['epsilon']}: {mean[key]:.4f} ({100 * (mean[key] - local):+.1f} {unit})"
        for key, runs in groups.items()
        if key.endswith("/unwidened")
    ]
    buys = [
        mean[key.removesuffix("/unwidened")] - mean[key]
        for key in groups
        if key.endswith("/unwidened") and key.removesuffix("/unwidened") in mean
    ]
    if buys:
        ablation.append(
            f"the widening adds {100 * min(buys):+.1f} to {100 * max(buys):+.1f} {unit} at the "
            "same noise"
        )
    verdict = (
        f"Under DP FedMAP stays at or above the local model's mean at epsilon {', '.join(kept)}."
        if kept
        else "Under DP FedMAP's mean is below the local model's at every epsilon tested."
    )
    private = sorted(
        (float(runs[0]["epsilon"]), mean[key])
        for key, runs in groups.items()
        if key.endswith("/none") and runs[0]["epsilon"] != "inf"
    )
    if private:
        eps, score = private[0]
        gap = 100 * (score - local)
        one = "1 pp" if unit == "pp" else "1 C-index point"
        reached = "within" if abs(gap) <= 1 else "not within"
        verdict += (
            f" At the tightest budget, epsilon {eps:g}, it is {reached} {one} of the local model "
            f"({gap:+.1f})."
        )
        if any(b[1] < a[1] for a, b in itertools.pairwise(private)):
            verdict += " Its mean does not grow monotonically with epsilon."
    title = TITLES.get(spec.name, spec.name)
    without = (
        f" Without the widened prior (sites under N(mu, sigma^2)): {'; '.join(ablation)}."
        if ablation
        else ""
    )
    return f"- **{title}**, local only {local:.4f}. " + "; ".join(parts) + f". {verdict}{without}"


def cost_finding(rows: Sequence[Record]) -> str:
    """What CKKS costs against secure aggregation off at the same epsilon: bytes, time, memory."""
    pairs = []
    names = list(dict.fromkeys(r["federation"] for r in rows))
    for name in names:
        groups = by_config(rows, name)
        for key, on in groups.items():
            off = groups.get(key.removesuffix("ckks") + "none")
            if key.endswith("/ckks") and off:
                pairs.append((on, off))
    if not pairs:
        return ""

    def avg(runs: Sequence[Record], field: str) -> float:
        return statistics.fmean(float(r[field]) for r in runs)

    sent = [avg(on, "bytes_per_site_round") for on, _ in pairs]
    clear = [avg(off, "bytes_per_site_round") for _, off in pairs]
    time_ratio = [avg(on, "seconds_per_round") / avg(off, "seconds_per_round") for on, off in pairs]
    memory = [avg(on, "baseline_mb") - avg(off, "baseline_mb") for on, off in pairs]
    dp_memory = [
        r["baseline_mb"]
        for r in rows
        if r["noise_multiplier"] > 0 and r["secure_aggregation"] == "none"
    ]
    no_dp = [r["baseline_mb"] for r in rows if r["config"] == "eps=inf/none"]
    accountant = (
        f" Under DP the accountant (Opacus, imported to calibrate z) adds about "
        f"{statistics.fmean(dp_memory) - statistics.fmean(no_dp):.0f} MB before round 1 whatever "
        "the aggregation."
        if dp_memory and no_dp
        else ""
    )
    rounding = max(
        (d.get("rounding", 0.0) for n in names for d in differences(rows, n).values()), default=0.0
    )
    return (
        "CKKS adds the same releases the clear path adds and the sites decrypt the sum: the "
        f"largest difference secure aggregation makes to any score is {rounding:.2g} (its "
        "rounding). It costs "
        f"bandwidth: each upload is {span(sent, 1e-3)} kB, one ciphertext of up to 4,096 values, "
        f"instead of {span(clear)} bytes. A round takes {span(time_ratio, digits=2)} times as "
        "long as with it off at the same epsilon (on this noisy machine, a ratio of means over "
        f"seeds), and the run's memory before round 1 grows by {span(memory)} MB (TenSEAL and "
        "the keys)." + accountant
    )


def span(values: Sequence[float], scale: float = 1.0, digits: int = 0) -> str:
    """'low-high' of values (one number when they agree at that precision)."""
    low, high = f"{min(values) * scale:.{digits}f}", f"{max(values) * scale:.{digits}f}"
    return low if low == high else f"{low}-{high}"


def gain_counts(groups: Mapping[str, Sequence[Record]], key: str) -> int:
    """How many sites the configuration's mean score puts below their local model's."""
    runs, local = groups[key], groups["local"]
    return sum(
        statistics.fmean(primary(r, s) for r in runs)
        < statistics.fmean(primary(r, s) for r in local) - 1e-9
        for s in local[0]["sites"]
    )
