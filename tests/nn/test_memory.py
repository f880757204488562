"""Memory of the NSM hot path, counted by torch's allocator (deterministic, not timed).

The peak of a training step is set by the first layer's forward pass, where several tensors
of the layer's output size are alive at once; each one less is 1/3 of the dCNN's whole step
here. The counts below are exact on the CPU (torch's allocator reports every block).
"""

import pytest
import torch

import nsm
from nsm.nn.functional import sign
from nsm.utils.memory import peak_allocated


def test_peak_allocated_counts_what_is_alive_at_once():
    kept = []

    def f():
        a = torch.ones(1000)  # kept: 4,000 bytes
        b = torch.ones(2000)  # 8,000 bytes, freed at once
        del b
        kept.append(a)

    assert peak_allocated(f) == 12_000
    assert peak_allocated(lambda: None) == 0
    with pytest.raises(ValueError, match="cpu and cuda"):
        peak_allocated(lambda: None, device="meta")


def test_sign_needs_one_temporary_beside_its_output():
    x = torch.randn(1000, 100)
    x[0, :3] = torch.tensor([float("nan"), float("inf"), -0.0])
    # the output and one temporary (and a 4-byte scalar); it used to be two temporaries
    assert peak_allocated(lambda: sign(x)) <= 2 * x.nbytes + 64
    z = sign(x)
    assert torch.isnan(z[0, :2]).all() and z[0, 2] == 1 and set(z[1:].unique().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("sampler", ["neuron", "probability"])
def test_a_training_forward_holds_four_output_sized_tensors_at_most(sampler):
    """The noise-free product (kept for the backward pass), the sample, the state and one
    temporary of sgn. Before: 5 with the neuron sampler, 6 with the probability sampler,
    which kept the drive t alive through the whole layer call."""
    torch.manual_seed(0)
    layer = nsm.NSMConv2d(1, 32, 5, sampler=sampler)
    x = torch.randn(100, 1, 28, 28).sign()
    out_bytes = 100 * 32 * 24 * 24 * 4
    peak = peak_allocated(lambda: layer(x).sum().backward())
    assert peak <= 4 * out_bytes + 4096, peak / out_bytes
