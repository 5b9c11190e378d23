"""Benchmark DARTS search steps: time, images/s, peak memory and FLOPs against the matmul peak.

Each case (settings x order) runs in its own subprocess, so its peak resident memory is its own.
A case builds a real `Search` on random 32x32 images and times `Search._train_step`, the step
the search loop runs: batch drawing and augmentation, the architecture step (first or second
order), the weight step, and the loss and accuracy read-back.

FLOPs are counted once per case with the formulas of `torch.utils.flop_counter` (see
`FlopCounter`), which count matrix multiplies and convolutions, forward and backward, but not
element-wise operations, batch norm or pooling. The achieved GFLOP/s is set against the measured peak of one 4096x4096 matrix
multiply on the same device, which shows how far a step is from the hardware limit.

Usage:
    python tools/bench_search.py --settings all --order all --steps 3
    python tools/bench_search.py --settings darts --order first --steps 2 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from kdarts.data import Dataset, Split
from kdarts.search.config import SearchConfig
from kdarts.search.device import resolve_device
from kdarts.search.trainer import Search, SearchOptions

# Shapes of the benchmarked supernets. `darts` is the DARTS paper's CIFAR-10 search; `small` is
# the kernel spec's local profile (kernels/search.toml).
SETTINGS = {
    "darts": dict(layers=8, init_channels=16, nodes=4, batch_size=64),
    "small": dict(layers=5, init_channels=8, nodes=4, batch_size=64),
}
ORDERS = ("first", "second")
MATMUL_SIZE = 4096


@dataclass
class CaseResult:
    """Measurements of one (settings, order) case."""

    settings: str
    order: str
    device: str
    device_settings: str
    threads: int
    steps: int
    seconds_per_step: list[float]
    images_per_second: float
    peak_rss_gib: float
    cuda_max_allocated_gib: float | None
    gflop_per_step: float | None
    achieved_gflops: float | None


class FlopCounter(TorchDispatchMode):
    """Sum the FLOPs of the operators that `torch.utils.flop_counter` has formulas for.

    `FlopCounterMode` itself tracks modules with backward hooks that fail inside
    `torch.autograd.grad` (torch 2.13), which the architecture step calls, so this mode applies
    the same formulas without the module tracking.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=output)
        return output


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """Return the best GFLOP/s of a 4096x4096 matrix multiply on `device`."""
    left = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device, dtype=dtype)
    right = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device, dtype=dtype)
    torch.mm(left, right)
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(left, right)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * MATMUL_SIZE**3 / best / 1e9


def random_dataset(images: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=images).astype(np.int64)
    return Dataset(name="random", classes=[str(index) for index in range(10)], train=Split(pixels, labels))


def run_case(arguments: argparse.Namespace) -> CaseResult:
    """Time `arguments.steps` search steps of one case in this process."""
    settings_name, order = arguments.case.split(":")
    shape = SETTINGS[settings_name]
    steps = arguments.warmup + arguments.steps + (0 if arguments.no_flops else 1)
    config = SearchConfig(data="random", epochs=1, order=order, seed=0, **shape)
    dataset = random_dataset(2 * shape["batch_size"] * steps)

    with tempfile.TemporaryDirectory() as output:
        options = SearchOptions(
            output=Path(output),
            device=arguments.device,
            channels_last=arguments.channels_last,
            precision=arguments.precision,
        )
        search = Search(config, options, dataset=dataset)
        device = search.device
        search._start_epoch_order()
        learning_rate = config.learning_rate

        for _ in range(arguments.warmup):
            search._train_step(learning_rate)
            search.step_in_epoch += 1
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        times = []
        for _ in range(arguments.steps):
            synchronize(device)
            started = time.perf_counter()
            search._train_step(learning_rate)
            synchronize(device)
            times.append(time.perf_counter() - started)
            search.step_in_epoch += 1

        flops = None
        if not arguments.no_flops:
            counter = FlopCounter()
            with counter:
                search._train_step(learning_rate)
            flops = counter.total

    median = statistics.median(times)
    # Each step trains on one weight batch and one architecture batch.
    images_per_second = 2 * shape["batch_size"] / median
    return CaseResult(
        settings=settings_name,
        order=order,
        device=str(device),
        device_settings=search.settings.describe(),
        threads=torch.get_num_threads(),
        steps=arguments.steps,
        seconds_per_step=times,
        images_per_second=images_per_second,
        peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        cuda_max_allocated_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        gflop_per_step=flops / 1e9 if flops is not None else None,
        achieved_gflops=flops / 1e9 / median if flops is not None else None,
    )


def case_command(arguments: argparse.Namespace, case: str) -> list[str]:
    command = [
        sys.executable,
        __file__,
        "--case",
        case,
        "--steps",
        str(arguments.steps),
        "--warmup",
        str(arguments.warmup),
        "--device",
        arguments.device,
        "--channels-last",
        arguments.channels_last,
        "--precision",
        arguments.precision,
    ]
    if arguments.threads is not None:
        command += ["--threads", str(arguments.threads)]
    if arguments.no_flops:
        command.append("--no-flops")
    return command


def format_table(results: list[CaseResult], peak: float) -> str:
    header = (
        f"{'settings':8} {'order':6} {'s/step (median)':>15} {'min':>7} {'images/s':>9} {'peak RSS':>9} "
        f"{'CUDA max':>9} {'GFLOP/step':>11} {'GFLOP/s':>8} {'of peak':>8}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        cuda = f"{result.cuda_max_allocated_gib:.2f} GiB" if result.cuda_max_allocated_gib is not None else "-"
        gflop = f"{result.gflop_per_step:.1f}" if result.gflop_per_step is not None else "-"
        achieved = f"{result.achieved_gflops:.1f}" if result.achieved_gflops is not None else "-"
        share = f"{100 * result.achieved_gflops / peak:.0f}%" if result.achieved_gflops is not None else "-"
        lines.append(
            f"{result.settings:8} {result.order:6} {statistics.median(result.seconds_per_step):15.2f} "
            f"{min(result.seconds_per_step):7.2f} {result.images_per_second:9.1f} {result.peak_rss_gib:5.2f} GiB "
            f"{cuda:>9} {gflop:>11} {achieved:>8} {share:>8}"
        )
    return "\n".join(lines)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", choices=[*SETTINGS, "all"], default="all", help="supernet shape to time")
    parser.add_argument("--order", choices=[*ORDERS, "all"], default="all", help="DARTS gradient order")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count (one extra step per case)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    arguments = parse_arguments()
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)

    if arguments.case is not None:
        print(json.dumps(asdict(run_case(arguments))))
        return

    device = resolve_device(arguments.device)
    peak = matmul_peak_gflops(device)
    print(
        f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads; "
        f"{MATMUL_SIZE}x{MATMUL_SIZE} fp32 matmul peak {peak:.1f} GFLOP/s",
        flush=True,
    )

    settings = list(SETTINGS) if arguments.settings == "all" else [arguments.settings]
    orders = list(ORDERS) if arguments.order == "all" else [arguments.order]
    results = []
    for settings_name in settings:
        for order in orders:
            completed = subprocess.run(
                case_command(arguments, f"{settings_name}:{order}"), capture_output=True, text=True, check=False
            )
            if completed.returncode != 0:
                sys.exit(f"case {settings_name}:{order} failed:\n{completed.stderr[-3000:]}")
            result = CaseResult(**json.loads(completed.stdout.strip().splitlines()[-1]))
            print(
                f"{settings_name}/{order}: {', '.join(f'{value:.2f}' for value in result.seconds_per_step)} s per step",
                flush=True,
            )
            results.append(result)

    print()
    print(f"device settings: {results[0].device_settings}")
    print(format_table(results, peak))
    if arguments.json is not None:
        arguments.json.write_text(
            json.dumps({"matmul_peak_gflops": peak, "results": [asdict(result) for result in results]}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
