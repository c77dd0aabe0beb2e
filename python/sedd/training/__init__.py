"""Training: the loop (trainer.Trainer), the data order (batches), will it fit (memory), where it
runs (distributed: torchrun, DDP/FSDP, devices), metrics and sample files (metrics), checkpoints
that restore everything (checkpoints), the end-of-run report (report).

Imports: sedd.config, sedd.families, sedd.loading, sedd.data, sedd.nn."""

from .trainer import Trainer, adamw

__all__ = ["Trainer", "adamw"]
