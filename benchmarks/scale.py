"""Memory and time of the whole notebook at true scale, against a floor and a baseline.

    python -m benchmarks.scale [--models embedded,3.2-1b,8b,8b-hf] [--data build/checkpoints]
                               [--device cpu]

For each model shape it
1. makes a random-weight checkpoint with the release's exact params.json in Meta's
   layout if it is not on disk yet (testbeds/random_checkpoint.py, testbeds/presets.py; the 8B
   is 16 GB and 3.2-1B 2.5 GB — it says so before writing), except `embedded`, which ships;
   A name ending in -hf is the same model in Hugging Face's layout, written from the
   Meta-layout one (testbeds/hf_folder.py --stream: 16 GB more for the 8B);
2. reads the weights files twice so that every run finds them in the page cache;
3. runs, each as a fresh process, sampling the anonymous resident memory (RssAnon,
   from /proc) of the whole process tree — the Jupyter kernel included — every 20 ms:
   - notebook: the whole notebook headless (plumbing/run_notebook.py), LLAMA3_DTYPE=float32
     and again with bfloat16;
   - floor: one plain vectorized forward pass over the same memory-mapped weights
     (benchmarks/floor_forward.py), float32 and bfloat16; for an -hf model, the floors of
     its Meta-layout twin measured before it in the same invocation;
   - eager: the same forward pass after loading the whole file into memory without
     mmap, the way most walkthroughs do.
4. prints one table per model with each run's wall time (the fastest of --repeat runs,
   default 2: the first run after reading the file is often slower, because a run that
   needs gigabytes of anonymous memory first evicts part of the weights from the page
   cache) and peak anonymous memory (the largest of them),
   and its ratio to the float32 floor, then checks the targets: the notebook in the
   dtype `auto` picks on this machine (run_settings.choose_dtype) within 1.5× of the
   bfloat16 floor and, for the 8B, within 2.5 GB of anonymous memory.

File-backed pages of the memory-mapped checkpoint are page cache, which the kernel can
drop at any time; anonymous memory is what a machine must really have.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from benchmarks.common import DATA, checkpoint_for, header
from plumbing import REPO_DIR, checkpoints, model_sizes, run_settings, tensor_names
from testbeds.hf_folder import save_streaming
from testbeds.memory import tree_anon_bytes
from testbeds.presets import PRESETS, TIED_PRESETS
from testbeds.random_checkpoint import write_checkpoint

TARGET_8B_ANON_GB = 2.5
TARGET_8B_TIME_RATIO = 1.5
TARGET_EMBEDDED_SECONDS = 30.0


def gpu_memory_used() -> int:
    """Bytes in use on GPU 0, as nvidia-smi reports them (all processes)."""
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip().splitlines()[0]) * 1024 * 1024 if out.returncode == 0 else 0


def measure(
    command: list[str], env: dict[str, str], gpu: bool = False
) -> tuple[float, int, str, int]:
    """(wall seconds, peak anonymous bytes of the process tree, stdout, peak GPU bytes above
    idle)."""
    peak = 0
    gpu_idle = gpu_memory_used() if gpu else 0
    gpu_peak = gpu_idle
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=REPO_DIR,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    done = threading.Event()

    def sample():
        nonlocal peak, gpu_peak
        ticks = 0
        while not done.is_set():
            peak = max(peak, tree_anon_bytes(process.pid))
            if gpu and ticks % 10 == 0:
                gpu_peak = max(gpu_peak, gpu_memory_used())
            ticks += 1
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, err = process.communicate()
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode != 0:
        said = f"{' '.join(command)} failed (exit status {process.returncode})"
        raise SystemExit(f"{said}:\n{out[-2000:]}\n{err[-2000:]}")
    return elapsed, peak, out, gpu_peak - gpu_idle


def warm_page_cache(folder: Path) -> None:
    """Read the weights twice: the second read moves their pages to the kernel's active list.

    After one read, the first timed run still re-read part of the 8B from disk and was
    markedly slower than the run after it.
    """
    for _ in range(2):
        for path in [*folder.glob("consolidated.*.pth"), *folder.glob("*.safetensors")]:
            with open(path, "rb") as f:
                while f.read(64 << 20):
                    pass


def make_checkpoint(name: str, data: Path) -> Path:
    """benchmarks.common.checkpoint_for(name, data), written first if it is missing: random
    weights with preset NAME's shape in Meta's layout, or for NAME-hf the same weights in
    Hugging Face's layout."""
    folder = data / name
    if name == "embedded" or (folder / "config.json").exists():
        return checkpoint_for(name, data)
    if name.endswith("-hf"):  # the same weights in Hugging Face's layout
        meta = make_checkpoint(name.removesuffix("-hf"), data)
        print(
            f"writing {name}: {meta.name}'s weights as Hugging Face safetensors in {folder}",
            flush=True,
        )
        save_streaming(meta, folder, shard_bytes=2 * 2**30)
    elif not (folder / "consolidated.00.pth").exists():
        tied = name in TIED_PRESETS
        size = 2 * model_sizes.n_parameters(PRESETS[name], tied)
        print(f"creating a random {name} checkpoint: {size / 1e9:.1f} GB in {folder}", flush=True)
        write_checkpoint(folder, dict(PRESETS[name]), tied_output=tied)
    return checkpoint_for(name, data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="embedded,3.2-1b,8b")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--skip-eager",
        action="store_true",
        help="leave out the eager baseline (it needs RAM for the whole model)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="runs of each; the table shows the fastest and the largest memory",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated words: run only the runs whose label contains one",
    )
    args = parser.parse_args()
    print(header(device=args.device) + "\n", flush=True)
    failures = []
    gpu = args.device.startswith("cuda")
    floors: dict[str, dict] = {}  # by model: its floor runs, for its Hugging Face twin
    for name in args.models.split(","):
        folder = make_checkpoint(name, args.data)
        hf = name.endswith("-hf")
        warm_page_cache(folder)
        notebook = [
            sys.executable,
            "-m",
            "plumbing.run_notebook",
            "--out",
            str(REPO_DIR / "build" / f"scale-{name}.ipynb"),
        ]
        floor = [
            sys.executable,
            "-m",
            "benchmarks.floor_forward",
            str(folder),
            "--device",
            args.device,
        ]
        runs = {
            "notebook float32": (notebook, {"LLAMA3_DTYPE": "float32"}),
            "notebook bfloat16": (notebook, {"LLAMA3_DTYPE": "bfloat16"}),
            "floor float32 (mmap)": ([*floor, "--dtype", "float32"], {}),
            "floor bfloat16 (mmap)": ([*floor, "--dtype", "bfloat16"], {}),
        }
        if gpu:  # weights kept on the GPU (default there) vs streamed one at a time
            runs["notebook bfloat16, streamed"] = (
                notebook,
                {"LLAMA3_DTYPE": "bfloat16", "LLAMA3_STREAM": "1"},
            )
        if hf:  # floor_forward reads Meta's file: the twin's floors, measured before, stand in
            runs = {label: run for label, run in runs.items() if label.startswith("notebook")}
        if not args.skip_eager and not hf:
            runs["eager float32 (no mmap)"] = ([*floor, "--dtype", "float32", "--eager"], {})
        if args.only:
            runs = {
                label: run
                for label, run in runs.items()
                if any(word in label for word in args.only.split(","))
            }
        results = {}
        for label, (command, extra_env) in runs.items():
            env = {"LLAMA3_CKPT": str(folder), "LLAMA3_DEVICE": args.device, **extra_env}
            trials = []
            for _ in range(args.repeat):
                trials.append(measure(command, env, gpu))
                gpu_note = f"  {trials[-1][3] / 1e9:6.2f} GB on the GPU" if gpu else ""
                print(
                    f"  {name:9} {label:28} {trials[-1][0]:7.1f} s  {trials[-1][1] / 1e9:6.2f} GB "
                    f"anon{gpu_note}",
                    flush=True,
                )
            # the fastest run's time; the largest peak memory of any run
            fastest = min(trials, key=lambda trial: trial[0])
            results[label] = (
                fastest[0],
                max(t[1] for t in trials),
                fastest[2],
                max(t[3] for t in trials),
            )
        if hf:
            twin = name.removesuffix("-hf")
            if twin not in floors:
                print(f"(no floor: run --models {twin},{name} to compare with {twin}'s floors)\n")
                continue
            print(f"  (floors: {twin}'s, measured above on the same weights in Meta's layout)")
            results |= floors[twin]
        else:
            floors[name] = {
                label: result for label, result in results.items() if label.startswith("floor")
            }
        floor_label = (
            "floor float32 (mmap)"
            if "floor float32 (mmap)" in results
            else next(label for label in results if label.startswith("floor"))
        )
        base_time, base_anon = results[floor_label][:2]
        n_parameters = sum(
            math.prod(shape)
            for shape in tensor_names.tensor_shapes(
                checkpoints.open_checkpoint(folder).weights
            ).values()
        )
        print(f"\n{name}: {n_parameters / 1e9:.2f}B parameters")
        print(
            "| run | wall time | × floor | peak anonymous memory | × floor |"
            + (" peak GPU memory |" if gpu else "")
        )
        print("|---|---|---|---|---|" + ("---|" if gpu else ""))
        for label, (seconds, anon, _, gpu_bytes) in results.items():
            gpu_cell = f" {gpu_bytes / 1e9:.2f} GB |" if gpu else ""
            print(
                f"| {label} | {seconds:.1f} s | {seconds / base_time:.2f} | {anon / 1e9:.2f} GB | "
                f"{anon / max(base_anon, 1):.1f} |{gpu_cell}"
            )
        print(flush=True)
        auto = str(run_settings.choose_dtype("auto", torch.device(args.device))[0]).removeprefix(
            "torch."
        )
        default_label = f"notebook {auto}"
        if gpu or default_label not in results or "floor bfloat16 (mmap)" not in results:
            print(
                "(targets not checked: they are for the notebook's default dtype on the CPU, "
                "against the bf16 floor)\n"
            )
            continue
        notebook_time, notebook_anon = results[default_label][:2]
        bf16_floor = results["floor bfloat16 (mmap)"][0]
        print(
            f"default dtype here: {auto} "
            f"({run_settings.choose_dtype('auto', torch.device(args.device))[1]}); "
            f"{notebook_time / bf16_floor:.2f}× the bf16 floor\n"
        )
        if name in ("8b", "8b-hf"):
            if notebook_anon / 1e9 > TARGET_8B_ANON_GB:
                failures.append(
                    f"8B notebook ({auto}) peak anonymous memory {notebook_anon / 1e9:.2f} GB > "
                    f"{TARGET_8B_ANON_GB} GB"
                )
            if notebook_time > TARGET_8B_TIME_RATIO * bf16_floor:
                failures.append(
                    f"8B notebook ({auto}) {notebook_time:.1f} s > {TARGET_8B_TIME_RATIO} × bf16 "
                    f"floor {bf16_floor:.1f} s"
                )
        if name == "embedded" and notebook_time > TARGET_EMBEDDED_SECONDS:
            failures.append(
                f"embedded notebook {notebook_time:.1f} s > {TARGET_EMBEDDED_SECONDS} s"
            )
    print("targets:", "all met" if not failures else "MISSED — " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
