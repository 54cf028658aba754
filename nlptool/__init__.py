"""nlptool: pretrain and fine-tune Transformer language models from composed YAML configs."""

__version__ = "0.1.0"
