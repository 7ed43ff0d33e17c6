"""read_yaml_mapping: the one YAML config reader (serve configs; training configs once config/loader uses it)."""
from __future__ import annotations

from pathlib import Path

import pytest

from rtseg.errors import ConfigError
from rtseg.config.yamlfile import read_yaml_mapping


def test_reads_the_top_level_mapping(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text("MODEL:\n  NAME: ResUnet_3D\nport: 11112\n")
    assert read_yaml_mapping(tmp_path / "a.yml") == {"MODEL": {"NAME": "ResUnet_3D"}, "port": 11112}
    (tmp_path / "empty.yml").write_text("# nothing yet\n")
    assert read_yaml_mapping(tmp_path / "empty.yml") == {}


@pytest.mark.parametrize("content,message", [
    (None, "config file not found"),
    (b"a: [1, 2\n", "not valid YAML"),
    (b"- a\n- b\n", "expected a mapping of sections at the top level, found list"),
    (b"a: \xff\xfe\n", "not UTF-8 text: byte 0xff"),
])
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "cfg.yml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        read_yaml_mapping(path, entries="sections")
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text
