"""A small PyTorch CNN for scikit-learn's digits (NCHW), trained in seconds: the PyTorch tests' model."""

from __future__ import annotations

import numpy as np


def digits_net(width: int = 8):
    """Conv-ReLU-Conv-ReLU-MaxPool, then Linear-ReLU-Linear: the shape of edgepack.examples.digits_cnn, in PyTorch."""
    from torch import nn

    class DigitsNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            )
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 4 * width), nn.ReLU(), nn.Linear(4 * width, 10))

        def forward(self, x):
            return self.head(self.features(x))

    return DigitsNet()


def train_digits_net(x: np.ndarray, y: np.ndarray, epochs: int = 10, seed: int = 0, width: int = 8):
    """Train the digits net on (x float32 (N, 1, 8, 8), y int labels); about 95% held-out accuracy."""
    import torch

    torch.manual_seed(seed)
    net = digits_net(width)
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        order = torch.randperm(len(xs))
        for i in range(0, len(xs), 64):
            batch = order[i : i + 64]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(xs[batch]), ys[batch]).backward()
            optimizer.step()
    return net.eval()
