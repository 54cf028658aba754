"""A lab's own nlptool components, kept outside nlptool (see ../README.md)."""
