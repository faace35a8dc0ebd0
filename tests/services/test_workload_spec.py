"""The hub's rules for a workload's files, on the spec every surface builds."""

from __future__ import annotations

import pytest

from agenthub.core.errors import ValidationFailed
from agenthub.services.scheduling.spec import MAX_FILES_BYTES, WorkloadSpec


def spec(files: dict[str, str]) -> WorkloadSpec:
    return WorkloadSpec(command=["true"], files=files)


def test_the_size_limit_counts_utf8_bytes_not_characters() -> None:
    two_bytes = "é"
    exactly = {"a": two_bytes * (MAX_FILES_BYTES // 2)}
    assert spec(exactly).validated().files == exactly
    with pytest.raises(ValidationFailed, match="10485761 bytes in total; at most 10485760"):
        spec({**exactly, "b": "x"}).validated()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a/./b": ""}, "no '..', '.' or empty components"),
        ({"a/": ""}, "no '..', '.' or empty components"),
        ({"x" * 256: ""}, "longer than 255 bytes"),
        ({"\ud800": ""}, "not valid UTF-8"),
        ({"a": "\udfff"}, "not valid UTF-8 text"),
    ],
)
def test_paths_and_contents_a_node_could_not_write_are_refused(
    files: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationFailed, match=message):
        spec(files).validated()


def test_nested_paths_and_unicode_names_are_fine() -> None:
    files = {"src/pkg/__init__.py": "", "docs/ünïcode.md": "# ü\n", "a": "", "b/a": ""}
    assert spec(files).validated().files == files
