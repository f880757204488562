"""Uncertainty on rotated digits: an NSM knows when a digit is turned out of its training range.

Trains the SI Table 6 bNSM for one epoch on 6,000 MNIST images, then rotates 300 test digits
and prints the error, the predictive entropy and the mutual information (the part of the
uncertainty that comes from the network's own noise) at each angle.

    python examples/rotated_digits.py [DATA_DIR]    # MNIST in DATA_DIR/mnist (fetched if missing)
"""

import sys

import torch
import torch.nn.functional as F

import nsm
from nsm.data import load_dataset
from nsm.studies import uncertainty as U

torch.manual_seed(0)
data = load_dataset("mnist", sys.argv[1] if len(sys.argv) > 1 else None, train_subset=6000, test_subset=300)
model = nsm.build_model("bnsm")
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for idx in torch.randperm(data.train_x.shape[0]).split(100):
    loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()

print(f"{'angle':>6} {'error %':>8} {'entropy':>8} {'MI':>7}")
for angle in (0, 30, 60, 90):
    x = U.rotate_images(data.test_x, angle)
    samples = nsm.mc_sample_probs(model, x, 20)  # (S, N, classes): every pass's softmax
    err = nsm.error_rate(samples.mean(0), data.test_y)
    print(
        f"{angle:>6} {100 * err:>8.1f} {U.predictive_entropy(samples).mean():>8.3f} "
        f"{U.mutual_information(samples).mean():>7.3f}"
    )
