"""Packing without attention across examples, for every attention kernel.

TRL packs with best-fit decreasing and, for the ``bfd`` strategy, always flattens the whole micro-batch into one row
with ``position_ids`` that restart at 0 for each example (padding-free). transformers 5.19 turns restarting
``position_ids`` (with no ``attention_mask``) into a block-diagonal causal mask (`masking_utils.
find_packed_sequence_indices`), and varlen kernels read the boundaries from the ``cu_seq_lens_*`` that TRL's collator
adds. What that costs depends on the kernel:

* flash-attention 2/3 and flex attention skip the masked blocks: cost grows with the examples' own lengths. TRL's
  flattening is the right layout; mathgenie uses TRL's own path (``packing=True``).
* SDPA and eager materialize the mask and compute every block. A flattened micro-batch of B rows of L tokens becomes
  one (B·L)² attention and a (B·L)² mask (B=8, L=4096: 10⁹ entries). So for these kernels mathgenie packs with
  TRL's `pack_dataset` itself and keeps the B rows apart: one row per bin, ``position_ids`` restarting per example, no
  ``attention_mask`` — B masks of L², the same no-cross-example attention, B× less attention work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

logger = logging.getLogger(__name__)

VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3", "flex_attention")


def resolve_attn_implementation(name: str) -> str:
    """``auto`` → ``flash_attention_2`` if the flash-attn package imports and CUDA is there, else ``sdpa``."""
    if name != "auto":
        return name
    import importlib.util

    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def is_varlen(attn_implementation: str) -> bool:
    """Kernels that take padding-free flattened batches without computing cross-example blocks (Hub kernels such as
    ``kernels-community/flash-attn2`` included)."""
    return attn_implementation in VARLEN_ATTENTION or "flash" in attn_implementation


@dataclass
class PackedRowsCollator(DataCollatorForLanguageModeling):
    """Batches of packed rows (``input_ids``, ``labels``, ``seq_lengths`` from `trl.pack_dataset`), kept as rows:
    ``position_ids`` restart at 0 for each packed example and there is no ``attention_mask``, so transformers builds a
    block-diagonal causal mask per row. Right padding gets position 0 on every pad token, so each pad is its own
    one-token "example" and attends to nothing real. The first label of every example is ignored so no example is
    trained to predict the start of the next one (what TRL's padding-free collator does too)."""

    return_position_ids: bool = True

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if "seq_lengths" not in examples[0]:
            raise ValueError("PackedRowsCollator needs packed rows with `seq_lengths` (from trl.pack_dataset)")
        output = super().torch_call(examples)
        output.pop("attention_mask")
        output["labels"][output["position_ids"] == 0] = -100
        return output


def packed_rows_trainer_class():
    """`SFTTrainer` whose ``num_tokens`` metric is right for `PackedRowsCollator` batches. TRL counts a batch without
    ``attention_mask`` as padding-free, i.e. one flattened row: ``position_ids.size(1)`` tokens, B times too few for B
    packed rows. This subclass only corrects that count (to the non-pad tokens); training is TRL's."""
    import torch
    from trl import SFTTrainer

    class PackedRowsSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            position_ids = inputs.get("position_ids")
            if self.model.training and position_ids is not None and "attention_mask" not in inputs:
                # pads are the pad id at position 0 (a packed example never starts with the pad token)
                pads = ((inputs["input_ids"] == self.processing_class.pad_token_id) & (position_ids == 0)).sum()
                counted = torch.tensor(position_ids.size(1), device=position_ids.device)
                delta = self.accelerator.gather_for_metrics(position_ids.numel() - pads - counted).sum().item()
                self._total_train_tokens += delta // self._tp_size
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return out

    return PackedRowsSFTTrainer
