"""The built-in search spaces (YAML), shipped in the wheel as ``autotune.search_spaces``."""
