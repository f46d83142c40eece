"""Run under torchrun: train the tiny config with DDP, then save this rank's weights.

Usage: python -m torch.distributed.run --nproc_per_node 2 ddp_worker.py CONFIG OUT key=value ...
"""
import os
import sys

import torch

from transunet_app.config import load_config
from transunet_app.engine.trainer import Trainer

config = load_config(sys.argv[1], sys.argv[3:])
trainer = Trainer(config, sys.argv[2])
trainer.fit()
rank = int(os.environ["RANK"])
torch.save({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()},
           os.path.join(sys.argv[2], f"rank{rank}_weights.pt"))
