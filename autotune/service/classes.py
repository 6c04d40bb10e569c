"""Kinds of machine: the fingerprint a tuned config holds for, and its short readable name.

A config measured on one kind of machine is true there: the same CPU model, the same number of
usable CPUs, the same onnxruntime build and the same GPU. Those facts (from the fingerprint every
study and best.json already records) make a machine's class, named for them, e.g.
``amd-epyc-9r14-2cpu-ort1.31.1`` or ``intel-xeon-platinum-8-8cpu-nvidiah200-ort1.20.0``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from autotune.check import machine_slug
from autotune.machine import environment

#: Pins this process's class name. For tests only: it lets two agents on one machine stand for
#: two kinds of machine. A real fleet never sets it (its name would lie about the fingerprint).
CLASS_FOR_TESTS = "AUTOTUNE_CLASS_FOR_TESTS"
#: The fingerprint's facts that make a class (the rest, such as memory, may differ within one).
CLASS_FACTS = ("cpu_model", "isa_flags", "usable_cpus", "onnxruntime_version",
               "onnxruntime_package", "gpu")  # fmt: skip


def fingerprint(env: Mapping[str, Any] | None = None) -> dict[str, Any]:
    env = environment() if env is None else env
    return {fact: env.get(fact) for fact in CLASS_FACTS}


def class_name(env: Mapping[str, Any] | None = None) -> str:
    """This machine's class (or ``env``'s): its fingerprint's short name."""
    pinned = os.environ.get(CLASS_FOR_TESTS)
    if pinned:
        return pinned
    return machine_slug(environment() if env is None else env)


def closest(here: Mapping[str, Any], measured: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Of the classes ``measured`` (name -> fingerprint), the one most like ``here``: the same
    GPU first, then the same CPU model, its ISA, the onnxruntime version, the nearest CPU count."""

    def score(print_: Mapping[str, Any]) -> tuple[float, ...]:
        isa_here, isa_there = set(here.get("isa_flags") or ()), set(print_.get("isa_flags") or ())
        shared = len(isa_here & isa_there) / max(1, len(isa_here | isa_there))
        cpus_here, cpus_there = here.get("usable_cpus") or 1, print_.get("usable_cpus") or 1
        return (
            float(print_.get("gpu") == here.get("gpu")),
            float(print_.get("cpu_model") == here.get("cpu_model")),
            shared,
            float(print_.get("onnxruntime_version") == here.get("onnxruntime_version")),
            -abs(cpus_here - cpus_there) / max(cpus_here, cpus_there),
        )

    if not measured:
        return None
    return max(sorted(measured), key=lambda name: score(measured[name]))


def differences(here: Mapping[str, Any], there: Mapping[str, Any]) -> Sequence[str]:
    """What differs between two fingerprints, one short phrase each."""
    said = []
    for fact in CLASS_FACTS:
        if here.get(fact) != there.get(fact):
            said.append(f"{fact.replace('_', ' ')} {there.get(fact)} (here {here.get(fact)})")
    return said
