"""mathgenie: MathGenie-style synthetic math data on the Hugging Face stack."""

__version__ = "0.1.0"
