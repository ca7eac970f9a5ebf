"""Benchmark (kernel): exact RG kernel push-forward throughput against a bare FFT round trip.

The push-forward phi_0 -> phi_t of a linear scheme is rfftn, a diagonal multiply, Gaussian noise
on the half grid, and irfftn (`AbstractLinearScheme.push_forward`), so the bare round trip
irfftn(rfftn(phi)) of the same arrays, timed in the same run, is its practical limit. Three
timings per (N, dtype), interleaved repeat by repeat so machine noise hits all alike:

- `bare_fft`: jit(irfftn(rfftn(phi))), no noise;
- `push_forward`: the library call as users make it (Carosso M = 1, t = 0.1, noise included);
- `noise_only`: `standard_half_spectrum_noise` for the same batch, so the table shows where the
  push-forward's time goes (the noise is fused into the push-forward, so the two do not add);
- `multiply_only`: irfftn(a_t rfftn(phi)), the push-forward without its noise: the ceiling that
  any noise source, however cheap, leaves to the push-forward (one elementwise pass between the
  two FFTs, which XLA cannot fuse into its FFT calls).

The noise is threefry-2x32 written out so that XLA fuses it (`rgdiff.theory.gaussian`), with both
32-bit words of every hash used and erf^-1 per part; JAX's `jax.random.normal` (a rolled threefry
loop keeping 32 of 64 bits) cost about one FFT round trip of the same array on this CPU.

Figures are configurations per second (median of repeats, spread half the min-max range); the
ratios are per-repeat throughput ratios to the bare round trip. One call at N = 128 takes a few
milliseconds, where the scheduler's jitter is as large as the call, so each repeat times calls
back to back for at least `min_seconds` and divides.

The ratio depends on the thread count: XLA's CPU backend runs the FFTs on all cores but the fused
noise loop on one, so on 2 cores the push-forward measured 0.39 of the round trip where one core
alone gave 0.58 (stop 24, quiet machine). The figures are for the machine in the JSON's `machine`.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.lattice.geometry import Lattice
from rgdiff.rg import make_scheme
from rgdiff.theory.gaussian import as_complex, standard_half_spectrum_noise
from rgdiff.bench._timing import Figure, compiled, format_figure, ratio_of, seconds_per_call_over

NAME = "kernel"
T_FLOW = 0.1


@dataclasses.dataclass(frozen=True)
class KernelSettings:
    sizes: tuple[int, ...] = (20, 64, 128)
    dtypes: tuple[str, ...] = ("float32", "float64")
    sites_per_batch: int = 2**20  # batch = sites_per_batch / N^2, clipped to [8, 1024]
    repeats: int = 11
    min_seconds: float = 0.1  # per repeat: calls are repeated back to back until this much time has passed

    def batch(self, n: int) -> int:
        return int(min(1024, max(8, self.sites_per_batch // n**2)))


QUICK = KernelSettings(sites_per_batch=2**18, repeats=5, min_seconds=0.05)
TINY = KernelSettings(sizes=(8,), dtypes=("float32",), sites_per_batch=512, repeats=2, min_seconds=0.0)


def _time_once(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def run(settings: KernelSettings, callback=None) -> dict:
    scheme = make_scheme("carosso", M=1.0)
    rows = []
    total = len(settings.sizes) * len(settings.dtypes)
    for n in settings.sizes:
        lattice = Lattice.lattice_units(2, n)
        batch = settings.batch(n)
        for dtype_name in settings.dtypes:
            dtype = jnp.dtype(dtype_name)
            phi = jax.random.normal(jax.random.key(0), (batch, n, n), dtype)
            key = jax.random.key(1)

            def bare(x, n=n):
                return jnp.fft.irfftn(jnp.fft.rfftn(x, axes=(-2, -1)), s=(n, n), axes=(-2, -1))

            bare_exe, bare_compile = compiled(bare, phi)

            def library(k, x, lattice=lattice):
                return scheme.push_forward(k, x, T_FLOW, lattice)

            def noise(k, lattice=lattice, batch=batch, dtype=dtype):
                return standard_half_spectrum_noise(k, lattice, (batch,), dtype)

            a_t, _ = scheme.kernel(T_FLOW, lattice, dtype)

            def multiply(x, a=a_t, lattice=lattice):
                modes = lattice.rfourier(x)
                return lattice.inverse_rfourier(as_complex(a, modes) * modes)

            multiply_exe, _ = compiled(multiply, phi)

            first = _time_once(library, key, phi)  # includes tracing and compilation
            jax.block_until_ready(bare_exe(phi))
            jax.block_until_ready(noise(key))
            jax.block_until_ready(multiply_exe(phi))
            times = {"bare_fft": [], "push_forward": [], "noise_only": [], "multiply_only": []}
            for r in range(settings.repeats):
                k = jax.random.fold_in(key, r)
                times["bare_fft"].append(seconds_per_call_over(bare_exe, phi, min_seconds=settings.min_seconds))
                times["push_forward"].append(seconds_per_call_over(library, k, phi, min_seconds=settings.min_seconds))
                times["noise_only"].append(seconds_per_call_over(noise, k, min_seconds=settings.min_seconds))
                times["multiply_only"].append(seconds_per_call_over(multiply_exe, phi, min_seconds=settings.min_seconds))
            rate = {name: [batch / s for s in ts] for name, ts in times.items()}
            rows.append(
                {
                    "N": n,
                    "dtype": dtype_name,
                    "batch": batch,
                    "configs_per_s": {name: Figure.of(r).as_dict() for name, r in rate.items()},
                    "compile_seconds": {
                        "bare_fft": bare_compile,
                        "push_forward": max(first - float(np.median(times["push_forward"])), 0.0),
                    },
                    "vs_bare_fft": {
                        "push_forward": ratio_of(rate["push_forward"], rate["bare_fft"]).as_dict(),
                        "noise_only": ratio_of(rate["noise_only"], rate["bare_fft"]).as_dict(),
                        "multiply_only": ratio_of(rate["multiply_only"], rate["bare_fft"]).as_dict(),
                    },
                }
            )
            if callback:
                callback(NAME, len(rows), total)
    return {"settings": dataclasses.asdict(settings), "scheme": scheme.describe(), "t": T_FLOW, "rows": rows}


def ratios(result: dict) -> dict:
    """`kernel_vs_bare_fft` (library push-forward, float32 at the largest N; float64 too)."""
    rows = result["rows"]
    largest = max(r["N"] for r in rows)
    out = {}
    for r in rows:
        if r["N"] != largest:
            continue
        suffix = "" if r["dtype"] == "float32" else f"_{r['dtype']}"
        out[f"kernel_vs_bare_fft{suffix}"] = r["vs_bare_fft"]["push_forward"]
    if "kernel_vs_bare_fft" not in out and "kernel_vs_bare_fft_float64" in out:
        out["kernel_vs_bare_fft"] = out["kernel_vs_bare_fft_float64"]
    return out


def table_rows(result: dict) -> tuple[list[str], list[list[str]]]:

    header = ["N", "dtype", "batch", "bare FFT cfg/s", "push-forward cfg/s", "pf / bare", "noise only cfg/s", "noise / bare",
              "no-noise pf / bare", "compile s (pf)"]
    body = []
    for r in result["rows"]:
        c, v = r["configs_per_s"], r["vs_bare_fft"]
        body.append([
            str(r["N"]), r["dtype"], str(r["batch"]),
            format_figure(c["bare_fft"]["median"], c["bare_fft"]["spread"]),
            format_figure(c["push_forward"]["median"], c["push_forward"]["spread"]),
            format_figure(v["push_forward"]["median"], v["push_forward"]["spread"]),
            *_optional(c, v, "noise_only"),
            _optional(c, v, "multiply_only")[1],
            f"{r['compile_seconds']['push_forward']:.2f}",
        ])
    return header, body


def _optional(c: dict, v: dict, name: str) -> list[str]:
    """Figure and ratio of a candidate that results written by older versions lack."""
    if name not in c:
        return ["n/a", "n/a"]
    return [format_figure(c[name]["median"], c[name]["spread"]), format_figure(v[name]["median"], v[name]["spread"])]
