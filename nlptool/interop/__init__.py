"""Conversion between nlptool and other libraries (Hugging Face)."""
