"""Parsing of the Gateway's resource strings and identifiers; each error is a 400 whose message
is the document's own ("Invalid machine cpu value", ...)."""

from __future__ import annotations

import re

from agenthub.core.errors import ValidationFailed

_CPU = re.compile(r"^\s*(\d{1,9})m\s*$")
_MEMORY = re.compile(r"^\s*(\d{1,12})(Ki|Mi|Gi|Ti)\s*$")
_MIB_PER_UNIT = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
_GPU_COUNT = re.compile(r"^\s*(\d{1,4})\s*$")
MACHINE_ID = re.compile(r"^[0-9a-f]{8}$")
POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def parse_cpu(value: str) -> int:
    """ "8000m" → 8000 millicores. Only millicores are accepted, as the document says."""
    match = _CPU.match(value)
    if match is None or int(match.group(1)) == 0:
        raise ValidationFailed("Invalid machine cpu value", code="invalid_cpu")
    return int(match.group(1))


def parse_memory(value: str) -> int:
    """ "16Gi" → 16384, "32768Mi" → 32768: MiB, rounded down (at least 1)."""
    match = _MEMORY.match(value)
    if match is None or int(match.group(1)) == 0:
        raise ValidationFailed("Invalid machine memory value", code="invalid_memory")
    return max(1, int(int(match.group(1)) * _MIB_PER_UNIT[match.group(2)]))


def parse_gpu_count(value: str) -> int:
    match = _GPU_COUNT.match(value)
    if match is None:
        raise ValidationFailed("Invalid gpu count", code="invalid_gpu_count")
    return int(match.group(1))


def normalize_machine_id(value: str) -> str:
    """Machine ids are 8 hexadecimal characters; stored lower-case."""
    machine_id = value.strip().lower()
    if not MACHINE_ID.match(machine_id):
        raise ValidationFailed(
            "Invalid payload: machine_id must be 8 hexadecimal characters", code="invalid_payload"
        )
    return machine_id


def check_pool_name(name: str) -> str:
    if not POOL_NAME.match(name):
        raise ValidationFailed(
            "Invalid pool name: use 1-63 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit.",
            code="invalid_pool_name",
        )
    return name


TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?$")


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """Label keys are 1-128 characters of letters, digits and ``._/-``; values up to 253."""
    if len(labels) > 64:
        raise ValidationFailed("At most 64 labels per node.", code="invalid_labels")
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            raise ValidationFailed(f"Invalid label key {key!r}.", code="invalid_labels")
        if not isinstance(value, str) or len(value) > 253:
            raise ValidationFailed(f"Invalid value for label {key!r}.", code="invalid_labels")
    return dict(labels)


def check_taints(taints: list[dict[str, str]]) -> list[dict[str, str]]:
    """Taints are ``{"key", "value", "effect"}`` with effect one of :data:`TAINT_EFFECTS`."""
    if len(taints) > 32:
        raise ValidationFailed("At most 32 taints per node.", code="invalid_taints")
    cleaned = []
    for taint in taints:
        key, value, effect = taint.get("key", ""), taint.get("value", ""), taint.get("effect", "")
        if not _LABEL_KEY.match(key) or len(value) > 253:
            raise ValidationFailed(f"Invalid taint {taint!r}.", code="invalid_taints")
        if effect not in TAINT_EFFECTS:
            raise ValidationFailed(
                f"Invalid taint effect {effect!r}: use one of {', '.join(TAINT_EFFECTS)}.",
                code="invalid_taints",
            )
        cleaned.append({"key": key, "value": value, "effect": effect})
    return cleaned
