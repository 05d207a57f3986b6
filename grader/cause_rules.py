"""Likely-cause rules that hold for any assignment whose items return tensors.

An assignment's causes module (its task's `likely_causes`) runs these next to its own: a
returned value that is not a tensor, an output of the wrong dtype, a failure only on CUDA.
Each takes the item's results that ran and the failing ones not yet explained, and returns a
`LikelyCause` naming exactly the cases it explains, or None. The cause names are the
assignment's to declare (its subject's `causes`), so an assignment that uses a rule lists
the name the rule gives.
"""
from __future__ import annotations

from .subject import LikelyCause

FAILING = ("failed", "error", "timeout")

# What a device mismatch says, on the CPU or in a CUDA kernel.
DEVICE_MISMATCH = ("on cpu for a cuda input", "Expected all tensors to be on the same device",
                   "device type cuda", "found at least two devices")


def cause(name: str, evidence: str, cases: list) -> LikelyCause:
    return LikelyCause(name, evidence, cases=tuple(r.case.key for r in cases))


def example(cases: list):
    """The case an evidence names: a public one where there is one (a student's report drops
    evidence that names a hidden case)."""
    return min(cases, key=lambda r: (r.case.hidden, r.case.id, r.case.device))


def not_a_tensor(ran: list, failing: list) -> LikelyCause | None:
    wrong = [r for r in failing if r.run.returned_kind in ("ndarray", "sequence", "other")]
    if wrong:
        return cause("not_a_tensor", f"returns {example(wrong).run.returned_type} in {len(wrong)} cases; "
                                     "return a torch.Tensor", wrong)
    return None


def wrong_dtype(ran: list, failing: list) -> LikelyCause | None:
    wrong = [r for r in failing if "returned float" in r.message and " for float" in r.message]
    if wrong:
        r = example(wrong)
        return cause("wrong_dtype", f"{r.case.id}: {r.message}; create tensors with dtype=input.dtype", wrong)
    return None


def cuda_only(ran: list, failing: list) -> LikelyCause | None:
    """Cases that pass on the CPU and fail on CUDA: a CPU tensor made for a CUDA input, the GPU's
    memory, or something else about the device."""
    cpu_passed = {r.case.id for r in ran if r.case.device == "cpu" and r.status == "passed"}
    only_cuda = [r for r in failing if r.case.device == "cuda" and r.case.id in cpu_passed]
    if not only_cuda:
        return None
    first = example(only_cuda)
    text = first.message
    where = f"{len(only_cuda)} cases pass on the CPU and fail on CUDA ({first.case.id}: {text[:160]})"
    if any(marker in text for marker in DEVICE_MISMATCH):
        return cause("cpu_tensor_for_cuda_input", f"{where}; create tensors with device=input.device", only_cuda)
    if "out of GPU memory" in text or "CUDA out of memory" in text:
        return cause("out_of_gpu_memory", f"{where}; the layer allocates more than the GPU has", only_cuda)
    return cause("fails_only_on_cuda", where, only_cuda)
