"""The lifetime of ``torch.distributed``'s process group in the commands that ``accelerate launch`` may start
as several processes (``upscale``, training)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def process_group_ended() -> Iterator[None]:
    """Destroy the default process group (if one was started inside or before the block) when the block ends.

    A process that exits with its gloo process group still alive may abort while the interpreter shuts down
    (``terminate called without an active exception``, SIGABRT, exit -6: gloo's worker threads outlive
    Python; pytorch/pytorch#190489), which ``accelerate launch`` reports as a failed run after all the work
    was done. On a normal end every process first waits for the others, so that none closes its connections
    while another still reads from them; after an error the group is destroyed at once (the others may never
    reach a barrier). A single-process run has no group and nothing is done.
    """
    import torch.distributed as dist

    ended = False
    try:
        yield
        ended = True
    finally:
        if dist.is_available() and dist.is_initialized():
            if ended:
                dist.barrier()
            dist.destroy_process_group()
