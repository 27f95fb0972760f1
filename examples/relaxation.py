"""Relaxation rates of a protein's backbone amides, with Monte Carlo errors, on every core.

For each residue, the peak intensity decays over the relaxation delay as I(t) = I0 exp(-R t).
The program fits R and I0 to each residue's curve, then estimates the error of R by Monte
Carlo: it simulates many data sets from the fitted curve with the measured noise, fits each,
and takes the spread of the fitted rates. The data are synthetic but realistic: a random
sequence (prolines have no amide proton, so no peak), rates of an ordered core and of flexible
termini, a noise level measured from duplicate spectra.

Each residue's fit is one command, and each batch of its simulations another, queued on the
processor of the chosen fabric. Every command seeds its own random numbers, so the results
are the same on every fabric and any number of slaves.

    python examples/relaxation.py [--fabric multiprocessing] [--slaves N] [--residues 300]
                                  [--simulations 100] [--batch 25] [--output results]
    multi -m mpi4py examples/relaxation.py        (or under mpiexec, see the README)

``--timeline results/timeline.json`` writes where the time went (see the README).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from multi import (
    Application_callback,
    Memo,
    Processor_box,
    Result_command,
    Slave_command,
    load_multiprocessor,
)

#: Relaxation delays of the experiment, in seconds (duplicates at 0.02 and 0.1 s).
DELAYS = np.array([0.0, 0.01, 0.02, 0.02, 0.04, 0.06, 0.08, 0.1, 0.1, 0.14, 0.18, 0.24, 0.32])
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
#: Relative noise of an intensity, as duplicate spectra measure it.
NOISE = 0.02


# The science: on the slaves -------------------------------------------------------------------


def decay(parameters: np.ndarray, delays: np.ndarray) -> np.ndarray:
    rate, intensity = parameters
    return intensity * np.exp(-rate * delays)


def fit_decay(delays: np.ndarray, intensities: np.ndarray) -> tuple[float, float, float]:
    """Fit I0 exp(-R t) by least squares; return R, I0 and chi-squared (in noise units)."""
    start = _log_linear_guess(delays, intensities)

    def residuals(parameters: np.ndarray) -> np.ndarray:
        return decay(parameters, delays) - intensities

    def jacobian(parameters: np.ndarray) -> np.ndarray:
        rate, intensity = parameters
        curve = np.exp(-rate * delays)
        return np.column_stack((-intensity * delays * curve, curve))

    fit = least_squares(residuals, start, jac=jacobian, method="lm")
    sigma = NOISE * fit.x[1]
    chi2 = float(np.sum((fit.fun / sigma) ** 2))
    return float(fit.x[0]), float(fit.x[1]), chi2


def _log_linear_guess(delays: np.ndarray, intensities: np.ndarray) -> np.ndarray:
    positive = intensities > 0
    slope, offset = np.polyfit(delays[positive], np.log(intensities[positive]), 1)
    return np.array([max(-slope, 0.1), np.exp(offset)])


class Fit_residue(Slave_command):
    """Fit the measured decay of one residue."""

    def __init__(self, residue: int, intensities: np.ndarray) -> None:
        super().__init__()
        self.residue = residue
        self.intensities = intensities

    def run(self, processor, completed):
        rate, intensity, chi2 = fit_decay(DELAYS, self.intensities)
        processor.return_object(Fitted(processor, completed, rate, intensity, chi2))


class Simulate_residue(Slave_command):
    """Fit ``count`` data sets simulated from a residue's fitted curve with the measured noise."""

    def __init__(
        self, residue: int, rate: float, intensity: float, seed: int, first: int, count: int
    ) -> None:
        super().__init__()
        self.residue = residue
        self.rate = rate
        self.intensity = intensity
        self.seed = seed
        self.first = first
        self.count = count

    def run(self, processor, completed):
        curve = decay(np.array([self.rate, self.intensity]), DELAYS)
        rates = []
        for simulation in range(self.first, self.first + self.count):
            generator = np.random.default_rng([self.seed, self.residue, simulation])
            noisy = curve + generator.normal(0.0, NOISE * self.intensity, DELAYS.size)
            rates.append(fit_decay(DELAYS, noisy)[0])
        processor.return_object(Simulated(processor, completed, rates))


# The results: on the master -------------------------------------------------------------------


class Residue(Memo):
    """What the master knows of one residue."""

    def __init__(self, number: int, name: str, intensities: np.ndarray) -> None:
        self.number = number
        self.name = name
        self.intensities = intensities
        self.rate = self.intensity = self.chi2 = float("nan")
        self.simulated: list[float] = []

    def error(self) -> float:
        return float(np.std(self.simulated, ddof=1)) if len(self.simulated) > 1 else float("nan")


class Fitted(Result_command):
    def __init__(self, processor, completed, rate, intensity, chi2):
        super().__init__(processor=processor, completed=completed)
        self.rate = rate
        self.intensity = intensity
        self.chi2 = chi2

    def run(self, processor, memo):
        memo.rate, memo.intensity, memo.chi2 = self.rate, self.intensity, self.chi2


class Simulated(Result_command):
    def __init__(self, processor, completed, rates):
        super().__init__(processor=processor, completed=completed)
        self.rates = rates

    def run(self, processor, memo):
        memo.simulated.extend(self.rates)


# The program ----------------------------------------------------------------------------------


def synthetic_protein(residues: int, seed: int) -> list[Residue]:
    """Peak intensities of a protein's amides: an ordered core and flexible termini."""
    generator = np.random.default_rng(seed)
    sequence = "M" + "".join(generator.choice(list(AMINO_ACIDS), residues - 1))
    found = []
    for index, name in enumerate(sequence):
        if name == "P":
            continue  # a proline has no amide proton: no peak
        position = index / max(residues - 1, 1)
        flexible = min(position, 1.0 - position) < 0.06
        rate = generator.lognormal(np.log(4.0 if flexible else 11.0), 0.25)
        intensity = generator.uniform(0.4, 1.6) * 1e6
        intensities = decay(np.array([rate, intensity]), DELAYS)
        intensities = intensities + generator.normal(0.0, NOISE * intensity, DELAYS.size)
        found.append(Residue(index + 1, name, intensities))
    return found


class Relaxation_analysis:
    """The master program: fit every residue, then its Monte Carlo simulations."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options

    def run(self) -> None:
        options = self.options
        processor = Processor_box().processor
        print(processor.get_intro_string())
        residues = synthetic_protein(options.residues, options.seed)
        print(f"Fitting {len(residues)} relaxation curves ({options.residues} residues).")
        for residue in residues:
            processor.add_to_queue(Fit_residue(residue.number, residue.intensities), residue)
        processor.run_queue()

        print(f"Monte Carlo: {options.simulations} simulations per residue.")
        for residue in residues:
            for first in range(0, options.simulations, options.batch):
                count = min(options.batch, options.simulations - first)
                command = Simulate_residue(
                    residue.number, residue.rate, residue.intensity, options.seed, first, count
                )
                processor.add_to_queue(command, residue)
        processor.run_queue()

        table = results_table(residues)
        print(table)
        output = Path(options.output)
        output.mkdir(parents=True, exist_ok=True)
        (output / "relaxation_rates.txt").write_text(table + "\n")
        print(f"Results written to {output / 'relaxation_rates.txt'}")
        if not options.no_plot:
            plot(residues, output / "relaxation_rates.png")
            print(f"Figure written to {output / 'relaxation_rates.png'}")


def results_table(residues: list[Residue]) -> str:
    lines = [f"{'residue':>7}  {'name':>4}  {'R (1/s)':>9}  {'error':>7}  {'I0':>11}  {'chi2':>6}"]
    for r in residues:
        lines.append(
            f"{r.number:>7}  {r.name:>4}  {r.rate:>9.4f}  {r.error():>7.4f}  "
            f"{r.intensity:>11.1f}  {r.chi2:>6.2f}"
        )
    rates = np.array([r.rate for r in residues])
    errors = np.array([r.error() for r in residues])
    lines.append(
        f"mean R {rates.mean():.3f} 1/s, median error {np.median(errors):.4f} 1/s "
        f"({np.median(errors / rates):.1%})"
    )
    return "\n".join(lines)


def plot(residues: list[Residue], path: Path) -> None:
    """The fits of a few residues, and the distribution of R over the protein."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (curves, histogram) = plt.subplots(1, 2, figsize=(11, 4.2))
    smooth = np.linspace(0.0, DELAYS.max(), 200)
    chosen = sorted(residues, key=lambda r: r.rate)
    for residue in (chosen[0], chosen[len(chosen) // 3], chosen[2 * len(chosen) // 3], chosen[-1]):
        scale = residue.intensity
        line = curves.plot(smooth, decay(np.array([residue.rate, 1.0]), smooth), lw=1.5)[0]
        curves.errorbar(
            DELAYS, residue.intensities / scale, yerr=NOISE, fmt="o", ms=4,
            color=line.get_color(),
            label=f"{residue.name}{residue.number}: R = {residue.rate:.2f} ± {residue.error():.2f}",
        )  # fmt: skip
    curves.set(xlabel="relaxation delay (s)", ylabel="I / I0", title="Fitted decays")
    curves.legend(fontsize=8)
    rates = [r.rate for r in residues]
    histogram.hist(rates, bins=30, color="tab:blue", alpha=0.8)
    histogram.set(xlabel="R (1/s)", ylabel="residues", title=f"R of {len(rates)} residues")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def whole_number(allowed: str, fits: Callable[[int], bool]) -> Callable[[str], int]:
    """A reader of a whole number for argparse, which refuses at once, saying what is allowed,
    a value that would end in a traceback or in a table of nan deep in the run."""

    def read(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not fits(value):
            raise argparse.ArgumentTypeError(f"must be {allowed}, not {text!r}")
        return value

    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fabric", default="multiprocessing", help="default: multiprocessing")
    parser.add_argument(
        "--slaves",
        type=whole_number(
            "a number >= 1, or -1 for one per usable core", lambda n: n >= 1 or n == -1
        ),
        default=-1,
        help="default: one per usable core",
    )
    at_least_1 = whole_number("a whole number >= 1", lambda n: n >= 1)
    parser.add_argument("--residues", type=at_least_1, default=300, help="length of the protein")
    parser.add_argument(
        "--simulations",
        type=whole_number(
            "a whole number >= 2 (an error is the spread of several)", lambda n: n >= 2
        ),
        default=100,
        help="per residue",
    )
    parser.add_argument("--batch", type=at_least_1, default=25, help="simulations per command")
    at_least_0 = whole_number("a whole number >= 0", lambda n: n >= 0)
    parser.add_argument("--seed", type=at_least_0, default=2006, help="seed of all random numbers")
    parser.add_argument("--output", default="results", help="folder for the table and figure")
    parser.add_argument("--no-plot", action="store_true", help="skip the figure")
    parser.add_argument("--verbosity", type=at_least_0, default=1)
    parser.add_argument("--timeline", help="write the runs' timeline (a Chrome trace) here")
    options = parser.parse_args()
    if options.timeline:  # (its folder first: the processor checks that there is one)
        Path(options.timeline).parent.mkdir(parents=True, exist_ok=True)
    callback = Application_callback(master=Relaxation_analysis(options))
    processor = load_multiprocessor(
        options.fabric,
        callback,
        processor_size=options.slaves,
        verbosity=options.verbosity,
        timeline=options.timeline,
    )
    processor.run()
    if options.timeline and not options.no_plot and Path(options.timeline).exists():
        from multi.timeline import draw

        chart = Path(options.timeline).with_suffix(".png")
        draw(options.timeline, chart)
        print(f"Timeline written to {options.timeline} and drawn in {chart}")


if __name__ == "__main__":
    main()
