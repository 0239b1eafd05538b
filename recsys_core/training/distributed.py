"""Where the fine-tune loop runs: one plain process, or one of N data-parallel processes under Accelerate.

:func:`runtime_for` picks the runtime once per ``fit``:

- :class:`LocalRuntime` when the process was started on its own (``python -m recsys_core.train``, the
  app's fine-tune jobs, tests). Plain PyTorch, exactly the loop the project always had.
- :class:`AcceleratedRuntime` when a launcher started several processes (``accelerate launch`` /
  ``torchrun`` set ``WORLD_SIZE`` > 1): Hugging Face Accelerate sets up the process group (gloo on CPU,
  NCCL on GPUs), wraps the step module in DistributedDataParallel (gradients all-reduced in
  backward), runs bf16 autocast through its ``mixed_precision``, and carries the few collectives the
  loop needs (broadcast of the validation metric, mean of the loss).

Why not Accelerate for one process too: its state is a process-wide singleton that refuses a
different device or precision once the first ``Accelerator`` exists ("AcceleratorState has already
been initialized"), and ``fit`` runs many times in the long-lived app process (fine-tune jobs that may
ask for different devices or precisions). The plain loop also stays bit for bit what it was.
"""

from __future__ import annotations

import contextlib
import os
from typing import ContextManager, Iterable, Protocol, Sequence, TypeVar

import torch
from torch import nn

from recsys_core.device import resolve_device

T = TypeVar("T")


def launched_data_parallel() -> bool:
    """True in a process that a launcher started as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def wants_bf16(precision: str, device: torch.device) -> bool:
    """``auto`` means bf16 autocast on CUDA and fp32 elsewhere; ``bf16`` / ``fp32`` are taken as asked."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


class Runtime(Protocol):
    device: torch.device
    num_processes: int
    process_index: int

    @property
    def is_main(self) -> bool: ...
    def describe(self) -> str: ...
    def prepare(self, module: nn.Module, optimiser: torch.optim.Optimizer, *,
                find_unused_parameters: bool = True) -> tuple[nn.Module, torch.optim.Optimizer]: ...
    def autocast(self) -> ContextManager: ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def clip_grad_norm_(self, parameters: Iterable[nn.Parameter], max_norm: float) -> None: ...
    def shard(self, rows: Sequence[T]) -> list[T]: ...
    def broadcast(self, value: float) -> float: ...
    def mean(self, value: float) -> float: ...
    def seed_per_process(self, seed: int) -> None: ...
    def main_process_first(self) -> ContextManager: ...
    def wait_for_everyone(self) -> None: ...
    def close(self) -> None: ...


class LocalRuntime:
    """One process: plain PyTorch (the loop as it was before data-parallel training existed)."""

    num_processes = 1
    process_index = 0

    def __init__(self, device: torch.device, bf16: bool) -> None:
        self.device = device
        self.bf16 = bf16

    @property
    def is_main(self) -> bool:
        return True

    def describe(self) -> str:
        return f"one process, device {self.device}, {'bf16 autocast' if self.bf16 else 'fp32'}"

    def prepare(self, module: nn.Module, optimiser: torch.optim.Optimizer, *,
                find_unused_parameters: bool = True) -> tuple[nn.Module, torch.optim.Optimizer]:
        return module, optimiser

    def autocast(self) -> ContextManager:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_grad_norm_(self, parameters: Iterable[nn.Parameter], max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)

    def shard(self, rows: Sequence[T]) -> list[T]:
        return list(rows)

    def broadcast(self, value: float) -> float:
        return value

    def mean(self, value: float) -> float:
        return value

    def seed_per_process(self, seed: int) -> None:
        """Nothing: re-seeding would change the random stream, and with it every result since the first release."""

    def main_process_first(self) -> ContextManager:
        return contextlib.nullcontext()

    def wait_for_everyone(self) -> None:
        pass

    def close(self) -> None:
        pass


class AcceleratedRuntime:
    """One of N processes started by ``accelerate launch`` / ``torchrun``, driven by ``accelerate.Accelerator``."""

    def __init__(self, device: str = "auto", precision: str = "auto") -> None:
        from accelerate import Accelerator
        from accelerate.utils import parse_flag_from_env

        forced_cpu = parse_flag_from_env("ACCELERATE_USE_CPU")
        if device == "cuda" and forced_cpu:
            raise ValueError("--device cuda was asked for but the launcher forces the CPU (ACCELERATE_USE_CPU / "
                             "accelerate launch --cpu); drop one of the two")
        if device == "cuda":
            resolve_device("cuda")  # a clear error when no GPU is visible
        cpu = device == "cpu" or forced_cpu or not torch.cuda.is_available()
        bf16 = wants_bf16(precision, torch.device("cpu" if cpu else "cuda"))
        self.accelerator = Accelerator(cpu=cpu, mixed_precision="bf16" if bf16 else "no")
        self.device = self.accelerator.device
        self.num_processes = self.accelerator.num_processes
        self.process_index = self.accelerator.process_index

    def describe(self) -> str:
        return (f"data-parallel training: {self.num_processes} processes ({self.accelerator.distributed_type.value}), "
                f"device {self.device}, mixed precision {self.accelerator.mixed_precision}")

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def prepare(self, module: nn.Module, optimiser: torch.optim.Optimizer, *,
                find_unused_parameters: bool = True) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Wrap in DistributedDataParallel. ``find_unused_parameters``: a step may leave some parameters out
        (DDP would otherwise wait for their gradients forever); False saves a graph walk per step and
        PyTorch's warning that the walk found nothing.

        The learning-rate schedule is not prepared: Accelerate would step it once per process per step (its
        convention for per-process batches), and here a step is one global batch.
        """
        from accelerate import DistributedDataParallelKwargs

        # Read by Accelerator.prepare when it builds the DDP wrapper (per model, so set just before).
        self.accelerator.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)
        return self.accelerator.prepare(module, optimiser)

    def autocast(self) -> ContextManager:
        return self.accelerator.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def clip_grad_norm_(self, parameters: Iterable[nn.Parameter], max_norm: float) -> None:
        self.accelerator.clip_grad_norm_(list(parameters), max_norm)

    def shard(self, rows: Sequence[T]) -> list[T]:
        """This process's contiguous share of ``rows``; shares differ in size by at most one row."""
        with self.accelerator.split_between_processes(list(rows)) as mine:
            return list(mine)

    def broadcast(self, value: float) -> float:
        from accelerate.utils import broadcast_object_list

        return float(broadcast_object_list([value], from_process=0)[0])

    def mean(self, value: float) -> float:
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        return float(self.accelerator.reduce(tensor, reduction="mean")[0])

    def seed_per_process(self, seed: int) -> None:
        """Different dropout masks in each process (``seed + process index``), like separate examples in one process."""
        from accelerate.utils import set_seed

        set_seed(seed, device_specific=True)

    def main_process_first(self) -> ContextManager:
        return self.accelerator.main_process_first()

    def wait_for_everyone(self) -> None:
        self.accelerator.wait_for_everyone()

    def close(self) -> None:
        """Leave the process group cleanly (PyTorch warns about a group never destroyed)."""
        self.accelerator.end_training()


def runtime_for(device: str = "auto", precision: str = "auto") -> Runtime:
    """The runtime of this process: Accelerate's when launched as one of several, plain PyTorch otherwise."""
    if launched_data_parallel():
        return AcceleratedRuntime(device, precision)
    resolved = resolve_device(device)
    return LocalRuntime(resolved, wants_bf16(precision, resolved))
