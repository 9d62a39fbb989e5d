# Copyright 2026 The difiisr-dwt authors. Apache-2.0.
"""Train DifIISR-DWT with accelerate: ``--stage autoencoder``, then ``adapter``, then ``diffusion``.

    accelerate launch train_accelerate.py --stage diffusion --preset tiny \\
        --train_data_dir ../shared/data/ir/roadscene --train_file_list ../shared/data/ir/roadscene_train.txt \\
        --vqvae_model_name_or_path OUT_AE/vqvae --dwt_encoder_model_name_or_path OUT_ADAPTER/dwt_encoder \\
        --output_dir OUT --lpips_backbone_dir ../shared/lpips

``python train_accelerate.py ...`` runs one process. Data, degradations, losses and the stages live
in :mod:`difiisr_dwt`; see ``examples/accelerate/README.md`` for multi-GPU and multi-node runs.
"""

from __future__ import annotations

import sys

from difiisr_dwt.errors import report_errors
from difiisr_dwt.training import get_stage
from difiisr_dwt.training.args import parse_args
from difiisr_dwt.training.loop import train


def main(argv: list[str] | None = None) -> int:
    """Train one stage; a bad flag, folder or checkpoint prints one ``error:`` line and exits 2."""
    args = parse_args(argv)

    def run() -> None:
        train(args, get_stage(args.stage))

    return report_errors(run)


if __name__ == "__main__":
    sys.exit(main())
