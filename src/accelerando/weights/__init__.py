"""Shipped weights (safetensors). See CODEC_CARD.md for what each file is and how it was made."""
