"""What a run hands back: best.json and the exports, the terminal tables, the report page,
``show`` and ``profile``."""
