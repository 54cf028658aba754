"""nlptool's YAML configs, shipped inside the package as `nlptool.configs`."""
