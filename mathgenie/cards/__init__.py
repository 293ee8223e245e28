"""Dataset and model cards (Jinja templates in ``templates/``) whose metadata the Hub validates."""

from mathgenie.cards.common import data_files_pattern, data_metadata
from mathgenie.cards.dataset import render_dataset_card
from mathgenie.cards.model import render_model_card

__all__ = ["data_files_pattern", "data_metadata", "render_dataset_card", "render_model_card"]
