"""A gate that holds a real server's forward passes until the test opens it, across the process boundary.

`python tests/gated_service.py GATE_DIR <invariant-serve flags>` runs the real `python -m service` (single
worker), except that every CNN it loads first passes its input through `invariant_tests::gate`, a torch op
that waits while the gate is closed. It is an op rather than Python code in `forward`, so the traced graph
the executor runs calls it too. The test side holds a `Gate` on the same folder:

- the gate is open while the file `open` exists (so loading and the start-up self-test run freely);
- a forward that finds it closed creates the file `waiting` and polls `open` every 2 ms;
- while the file `fault` exists (`Gate.inject_fault`), the batcher's compute thread fails outside the
  forward, where no model error is caught, for any model: it dies as it would on a bug in the batcher.

Slowness is therefore decided by the test, never by how fast the machine runs a model.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

import models.checkpoint
from models import ArchConfig, CNNConfig

POLL_S = 0.002


class Gate:
    """The test's handle on a gated server's forward passes (one folder, shared with the server)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.open_path = directory / "open"
        self.waiting_path = directory / "waiting"
        self.open()

    def open(self) -> None:
        self.open_path.touch()

    def close(self) -> None:
        self.open_path.unlink(missing_ok=True)
        self.waiting_path.unlink(missing_ok=True)

    def inject_fault(self) -> None:
        (self.directory / "fault").touch()

    def wait_until_blocked(self, timeout_s: float = 60.0) -> None:
        """Returns once a forward is waiting at the closed gate (the compute thread is held)."""
        deadline = time.monotonic() + timeout_s
        while not self.waiting_path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no forward reached the gate in {timeout_s} s")
            time.sleep(POLL_S)


def _install_gate(directory: Path) -> None:
    open_path, waiting_path = directory / "open", directory / "waiting"

    @torch.library.custom_op("invariant_tests::gate", mutates_args=())
    def gate(batch: torch.Tensor) -> torch.Tensor:
        if not open_path.exists():
            waiting_path.touch()
            while not open_path.exists():
                time.sleep(POLL_S)
        return batch.clone()  # a custom op may not return its input

    def pass_gate(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (torch.ops.invariant_tests.gate(args[0]), *args[1:])

    build_model = models.checkpoint.build_model  # type: ignore[attr-defined]

    def build_gated_model(config: ArchConfig) -> torch.nn.Module:
        model = build_model(config)
        if isinstance(config, CNNConfig):
            model.register_forward_pre_hook(pass_gate)
        return model

    models.checkpoint.build_model = build_gated_model  # type: ignore[attr-defined]


def _install_fault(directory: Path) -> None:
    import service.engine.batcher

    fault_path = directory / "fault"
    fair_shares = service.engine.batcher.fair_shares

    def faulty_fair_shares(remaining: list[int], free: int) -> list[int]:
        if fault_path.exists():
            raise RuntimeError("fault injected by the test")
        return fair_shares(remaining, free)

    service.engine.batcher.fair_shares = faulty_fair_shares


def main() -> None:
    directory, *flags = sys.argv[1:]
    if "--workers" in flags:
        raise SystemExit("gated_service: single worker only (spawned workers would not have the gate)")
    _install_gate(Path(directory))
    _install_fault(Path(directory))
    from service.cli import main as serve

    serve(flags)


if __name__ == "__main__":
    main()
