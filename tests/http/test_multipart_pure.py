"""Pure pieces of multipart handling: stored names, option validation, boundary parsing."""
from __future__ import annotations

import os
import re
import tempfile

import multipart
import pytest

from packetron.errors import BadRequest, ConfigError, UnsupportedMediaType
from packetron.http.multipart import (
    DEFAULT_MAX_FIELD_NAME_SIZE_IN_BYTES,
    DEFAULT_MAX_FIELD_SIZE_IN_BYTES,
    DEFAULT_MAX_FIELDS,
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_HEADER_PAIRS,
    DEFAULT_MAX_PARTS,
    SLOW_WRITE_SECONDS,
    THREADED_WRITES_SECONDS,
    MultipartOptions,
    boundary_from_content_type,
    default_storage_directory,
    sanitize_filename,
    storage_name,
    validate_multipart_options,
)
from packetron.http.multipart.storage import _WriteMode


def test_the_hellkamp_push_parser_is_the_multipart_module() -> None:
    # python-multipart ships a `multipart` shim package; this must be the real one.
    assert hasattr(multipart, "PushMultipartParser")


# ---------------------------------------------------------------- stored names


@pytest.mark.parametrize("client_name, expected", [
    ("photo.jpg", "photo.jpg"),
    ("my photo (1).jpg", "my_photo__1_.jpg"),
    ("../../etc/passwd", "passwd"),
    ("..\\..\\windows\\system32\\cmd.exe", "cmd.exe"),
    ("C:\\Users\\me\\doc.txt", "doc.txt"),
    ("/abs/path/x.bin", "x.bin"),
    (".bashrc", "bashrc"),
    ("...", "file"),
    ("-rf", "rf"),
    ("..", "file"),
    ("", "file"),
    (None, "file"),
    ("a/", "file"),
    ("résumé.pdf", "r_sum_.pdf"),
    ("x\x00y.txt", "x_y.txt"),
    ("名前.png", "__.png"),
])
def test_sanitize_filename(client_name: str | None, expected: str) -> None:
    assert sanitize_filename(client_name) == expected


def test_sanitize_filename_caps_length_and_keeps_extension() -> None:
    name = sanitize_filename("a" * 500 + ".tar.gz")
    assert len(name) == 64
    assert name.endswith(".gz") and name.startswith("aaaa")
    assert len(sanitize_filename("b" * 500)) == 64
    # an "extension" longer than 16 characters is not kept specially
    assert sanitize_filename("c.") == "c."
    assert sanitize_filename("d" * 10 + "." + "e" * 80) == ("d" * 10 + "." + "e" * 80)[:64]


def test_storage_name_is_random_token_then_sanitized_name() -> None:
    first, second = storage_name("../x.txt"), storage_name("../x.txt")
    assert re.fullmatch(r"[0-9a-f]{16}-x\.txt", first)
    assert first != second
    assert "/" not in storage_name("a/b/c") and "\\" not in storage_name("a\\b")


def test_default_storage_directory_is_under_tempdir(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: os.PathLike[str]) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert default_storage_directory() == os.path.join(
        str(tmp_path), ".packetroninternal", "files")


# ---------------------------------------------------------------- options


def test_defaults() -> None:
    opts = validate_multipart_options(None)
    assert opts == MultipartOptions()
    assert (opts.max_file_size, opts.max_files, opts.max_fields, opts.max_parts) == (
        None, DEFAULT_MAX_FILES, DEFAULT_MAX_FIELDS, DEFAULT_MAX_PARTS)
    assert (opts.max_field_size, opts.max_field_name_size, opts.max_header_pairs) == (
        DEFAULT_MAX_FIELD_SIZE_IN_BYTES, DEFAULT_MAX_FIELD_NAME_SIZE_IN_BYTES,
        DEFAULT_MAX_HEADER_PAIRS)
    assert (DEFAULT_MAX_FILES, DEFAULT_MAX_FIELDS, DEFAULT_MAX_PARTS) == (1000, 1000, 1000)
    assert (DEFAULT_MAX_FIELD_SIZE_IN_BYTES, DEFAULT_MAX_FIELD_NAME_SIZE_IN_BYTES,
            DEFAULT_MAX_HEADER_PAIRS) == (1048576, 100, 8)


def test_every_documented_key_is_accepted() -> None:
    async def on_file(name: str, stream: object, info: object) -> None:
        return None

    opts = validate_multipart_options({
        "max_file_size": 10, "max_files": 1, "max_fields": 2, "max_field_size": 3,
        "max_field_name_size": 4, "max_parts": 5, "max_header_pairs": 6,
        "file_storage_directory": "/tmp/x", "on_file": on_file, "on_limit": print})
    assert (opts.max_file_size, opts.max_files, opts.max_fields, opts.max_field_size,
            opts.max_field_name_size, opts.max_parts, opts.max_header_pairs) == (
        10, 1, 2, 3, 4, 5, 6)
    assert opts.file_storage_directory == "/tmp/x"
    assert opts.on_file is on_file and opts.on_limit is print


def test_none_means_no_limit_and_paths_are_accepted(tmp_path: os.PathLike[str]) -> None:
    opts = validate_multipart_options({"max_parts": None, "file_storage_directory": tmp_path})
    assert opts.max_parts is None
    assert opts.file_storage_directory == str(tmp_path)


@pytest.mark.parametrize("options, message", [
    ({"max_size": 1}, "unknown multipart_options ['max_size']"),
    ({"max_files": -1}, "multipart_options['max_files'] must be an int >= 0 or None"),
    ({"max_parts": 1.5}, "multipart_options['max_parts'] must be an int >= 0 or None"),
    ({"max_fields": True}, "multipart_options['max_fields'] must be an int >= 0 or None"),
    ({"max_file_size": "10"}, "multipart_options['max_file_size'] must be an int >= 0"),
    ({"file_storage_directory": 3}, "'file_storage_directory'] must be a path"),
    ({"on_file": "x"}, "multipart_options['on_file'] must be callable"),
    ({"on_limit": 1}, "multipart_options['on_limit'] must be callable"),
])
def test_bad_options_raise_config_error(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_multipart_options(options)
    assert message in str(info.value)


def test_options_must_be_a_dict() -> None:
    with pytest.raises(ConfigError, match="must be a dict"):
        validate_multipart_options([("max_files", 1)])  # type: ignore[arg-type]


# ---------------------------------------------------------------- boundary


@pytest.mark.parametrize("content_type, boundary", [
    ("multipart/form-data; boundary=abc", "abc"),
    ('multipart/form-data; boundary="a b:c"', "a b:c"),
    ("Multipart/Form-Data;boundary=----WebKitFormBoundaryX1", "----WebKitFormBoundaryX1"),
    ("multipart/form-data; charset=utf-8; boundary=z", "z"),
    ("multipart/form-data; boundary=" + "x" * 70, "x" * 70),
])
def test_boundary_from_content_type(content_type: str, boundary: str) -> None:
    assert boundary_from_content_type(content_type) == boundary


@pytest.mark.parametrize("content_type", [None, "", "application/json", "text/plain",
                                          "multipart/mixed; boundary=x"])
def test_not_multipart_form_data_is_415(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        boundary_from_content_type(content_type)


@pytest.mark.parametrize("content_type, message", [
    ("multipart/form-data", "has no boundary parameter"),
    ("multipart/form-data; boundary=", "has no boundary parameter"),
    ('multipart/form-data; boundary=""', "has no boundary parameter"),
    ("multipart/form-data; boundary=" + "x" * 71, "boundary is invalid"),
    ('multipart/form-data; boundary="a\x01b"', "boundary is invalid"),
    ('multipart/form-data; boundary="ab "', "boundary is invalid"),
])
def test_missing_or_bad_boundary_is_400(content_type: str, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        boundary_from_content_type(content_type)
    assert info.value.status_code == 400
    assert message in str(info.value)


# ---------------------------------------------------------------- where writes run


def test_writes_run_in_the_loop_until_one_is_slow() -> None:
    mode = _WriteMode()
    assert mode.inline(0.0)
    mode.record(100.0, SLOW_WRITE_SECONDS)  # at the threshold: not slow
    assert mode.inline(100.0)


def test_after_a_slow_write_writes_are_threaded_for_a_while() -> None:
    mode = _WriteMode()
    mode.record(100.0, SLOW_WRITE_SECONDS * 1.01)
    assert not mode.inline(100.0)
    assert not mode.inline(100.0 + THREADED_WRITES_SECONDS * 0.999)
    assert mode.inline(100.0 + THREADED_WRITES_SECONDS)
