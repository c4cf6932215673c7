"""Where training and inference run: chosen once by the caller, never inside the loop."""

from __future__ import annotations

import torch

from patchunet.resources import worker_count


def pick_device() -> torch.device:
    """CUDA where present, else the CPU with one thread per available core."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    torch.set_num_threads(worker_count())
    return torch.device("cpu")
