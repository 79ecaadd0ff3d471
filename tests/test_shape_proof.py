"""Issue 19: the execution shape is proven on the host. A C whose self-test fails gives way to the first
candidate that passes (one WARNING, the preferred and chosen C and why in the metadata and the repository
index); --strict-chunk-rows refuses instead. And every machine starts the demo-sized model under the AVX2
and SSE4.2 caps, so a default that breaks on an older CPU is red here too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch
from checkpoints import write_checkpoint
from conftest import start_server, stop_server
from torch import nn

from models import MLPConfig
from service.engine.executor import EagerExecutor
from service.engine.numerics_env import PORTABLE_ENVIRONMENT
from service.engine.pair import PairedExecutor
from service.engine.types import Executor
from service.guarantee.shape import MAX_CANDIDATES, candidate_chunk_rows, prove_pair, prove_shape

FEATURES = 6
DEMO_SIZED = MLPConfig(in_features=64, num_classes=10, hidden=(256, 256), norm="batch", dropout=0.2)
AVX2 = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
SSE42 = {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}


class TailSensitive(nn.Module):
    """Like a BLAS kernel whose leftover rows take another path: in a chunk of `bad_chunk` rows, the last two
    rows get a one-ulp different answer; every other chunk size is position-independent."""

    def __init__(self, bad_chunk: int) -> None:
        super().__init__()
        self.bad_chunk = bad_chunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x[:, :3] * 1.0
        if x.shape[0] == self.bad_chunk:
            out[-2:] = torch.nextafter(out[-2:], torch.full_like(out[-2:], float("inf")))
        return out


def builder(model: nn.Module) -> tuple[list[int], Callable[[int], Executor]]:
    built: list[int] = []

    def build(chunk_rows: int) -> Executor:
        built.append(chunk_rows)
        return EagerExecutor(model, (FEATURES,), 3, chunk_rows)

    return built, build


def test_candidates_follow_the_documented_order() -> None:
    assert candidate_chunk_rows(32) == [24, 48, 36, 12, 60, 40]
    assert candidate_chunk_rows(16) == [24, 12, 8, 32, 20, 4]


def test_a_failing_preferred_c_gives_way_to_the_first_candidate_that_passes() -> None:
    built, build = builder(TailSensitive(bad_chunk=32))
    proof = prove_shape(build, 32, strict=False, seed=0)
    assert proof.passed
    assert (proof.preferred, proof.chosen) == (32, 24)
    assert built == [32, 24]
    assert proof.tried[0][0] == 32
    assert "failed" in proof.tried[0][1]
    assert proof.reason.startswith("C = 32 failed its self-test on this host (failed: ")
    assert proof.reason.endswith("; C = 24 passed")


def test_strict_refuses_at_the_preferred_c_and_tries_nothing_else() -> None:
    built, build = builder(TailSensitive(bad_chunk=32))
    proof = prove_shape(build, 32, strict=True, seed=0)
    assert not proof.passed
    assert built == [32]


def test_a_row_mixing_model_fails_every_candidate_and_stops_after_the_bound() -> None:
    class Mixing(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x - x.mean(0, keepdim=True))[:, :3]

    built, build = builder(Mixing())
    proof = prove_shape(build, 16, strict=False, seed=0)
    assert not proof.passed
    assert built == [16, *candidate_chunk_rows(16)]
    assert len(built) == 1 + MAX_CANDIDATES


def test_a_passing_preferred_c_is_the_only_one_built() -> None:
    built, build = builder(TailSensitive(bad_chunk=7))
    proof = prove_shape(build, 8, strict=False, seed=0)
    assert (proof.chosen, built) == (8, [8])
    assert proof.reason == "the preferred C = 8 passed its self-test"


@pytest.mark.slow
@pytest.mark.parametrize("caps", [{}, AVX2, SSE42, PORTABLE_ENVIRONMENT], ids=["native", "avx2", "sse4.2", "portable"])
def test_the_demo_sized_model_serves_with_default_flags_under_each_instruction_set(
    caps: dict[str, str], tmp_path: Path
) -> None:
    write_checkpoint(tmp_path / "repository", "digits", DEMO_SIZED)
    server = start_server(tmp_path / "repository", tmp_path, env=caps)  # the caps are set before torch loads
    try:
        metadata = httpx.get(f"{server.url}/v2/models/digits", timeout=30).json()
        index = httpx.post(f"{server.url}/v2/repository/index", timeout=30).json()
    finally:
        stop_server(server)
    execution = metadata["parameters"]
    assert execution["chunk_rows_preferred"] == 32
    assert execution["chunk_rows"] in [32, *candidate_chunk_rows(32)]
    assert execution["chunk_rows_reason"]
    assert index[0]["state"] == "READY"
    # The lone-latency pair (C_small = 8 by default) serves where its self-test passes: it did under all four
    # on an AVX2 host; on an AVX-512 host 8 rows get other bits than 32 natively and AVX2-capped, and the
    # model serves one shape, saying so.
    pair = f"C = 8 and C = {execution['chunk_rows']}"
    if execution["small_chunk_rows"] == 8:
        assert execution["small_chunk_rows_reason"].startswith(f"{pair} give every row the same bits")
    else:
        assert execution["small_chunk_rows"] is None
        assert execution["small_chunk_rows_reason"].startswith(f"{pair} differ on this host")
        assert caps not in (SSE42, PORTABLE_ENVIRONMENT)  # the pair agreed there on every host measured
    if execution["chunk_rows"] != 32:
        assert index[0]["reason"] == execution["chunk_rows_reason"]
        assert "WARNING" in server.log()


# ------------------------------------------------------------------------- the lone-latency shape pair


class SmallShapeDiffers(nn.Module):
    """Position-independent at every C, but a chunk of `small` rows answers one ulp higher: a pair (small, C)
    whose shapes each pass their own self-test and still disagree with each other."""

    def __init__(self, small: int) -> None:
        super().__init__()
        self.small = small

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x[:, :3] * 1.0
        return torch.nextafter(out, torch.full_like(out, float("inf"))) if x.shape[0] == self.small else out


def test_a_pair_whose_shapes_agree_serves_lone_chunks_at_c_small() -> None:
    _, build = builder(SmallShapeDiffers(small=5))  # 5 is never asked for: both shapes agree
    large = build(16)
    proof = prove_pair(build, large, 4, seed=0)
    assert isinstance(proof.executor, PairedExecutor)
    assert proof.describe() == {"small_chunk_rows": 4, "small_chunk_rows_reason": proof.reason}
    assert proof.reason.startswith("C = 4 and C = 16 give every row the same bits (")
    assert proof.self_test is not None
    assert proof.self_test.batch_sizes == (1, 2, 3, 4, 5, 9, 15, 16, 17, 33)  # both shapes' sizes
    assert proof.executor.describe()["small_chunk_rows"] == 4
    rows = torch.randn(4, FEATURES).numpy()
    assert proof.executor.run(rows).logits.tobytes() == large.run(rows).logits.tobytes()


def test_a_pair_whose_shapes_differ_is_not_used() -> None:
    _, build = builder(SmallShapeDiffers(small=4))
    large = build(16)
    proof = prove_pair(build, large, 4, seed=0)
    assert proof.executor is large
    assert proof.describe()["small_chunk_rows"] is None
    assert proof.reason.startswith("C = 4 and C = 16 differ on this host (")
    assert proof.reason.endswith("): one shape")


def test_no_pair_when_off_or_not_below_c() -> None:
    _, build = builder(SmallShapeDiffers(small=4))
    large = build(8)
    assert prove_pair(build, large, 0, seed=0).reason == "off (--small-chunk-rows 0)"
    assert prove_pair(build, large, 8, seed=0).reason == "C_small = 8 is not below C = 8: one shape"
