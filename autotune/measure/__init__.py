"""Measuring one config: the worker process and its load, the session a config maps to, the
accuracy guard, timing statistics, and the runner that starts workers under limits (with the
zygote it forks them from and the machine's measuring lock)."""
