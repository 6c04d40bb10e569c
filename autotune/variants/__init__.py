"""Model variants: the quantization recipes (``recipes``) and making each variant, cached
(``build``); ``study/_screen.py`` judges them before the search."""
