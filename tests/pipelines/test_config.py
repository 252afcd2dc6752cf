"""Config files of the command line: reading TOML/YAML options, storage options, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from eo_contrast.pipelines.config import (
    SECRET_ENV,
    parse_storage_options,
    read_config,
    secret_values,
)

ALLOWED = ("epochs", "batch_size", "tile", "storage_options")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- read_config


def test_toml_options_at_top_level(tmp_path):
    path = _write(tmp_path, "run.toml", "epochs = 3\ntile = 64\nbatch_size = 16\n")
    assert read_config(path, verb="pretrain", allowed=ALLOWED) == {
        "epochs": 3,
        "tile": 64,
        "batch_size": 16,
    }


def test_toml_table_of_the_verb_with_dashed_keys(tmp_path):
    text = "[pretrain]\nepochs = 2\nbatch-size = 8\n\n[pretrain.storage-options]\nanon = true\n"
    path = _write(tmp_path, "run.toml", text)
    got = read_config(str(path), verb="pretrain", allowed=ALLOWED)
    assert got == {"epochs": 2, "batch_size": 8, "storage_options": {"anon": True}}


def test_the_verb_table_wins_over_top_level_keys(tmp_path):
    path = _write(tmp_path, "run.toml", "tile = 32\n[pretrain]\nepochs = 5\n")
    assert read_config(path, verb="pretrain", allowed=ALLOWED) == {"epochs": 5}


def test_yaml_at_top_level_and_under_the_verb(tmp_path):
    top = _write(tmp_path, "run.yaml", "epochs: 4\nbatch-size: 32\n")
    assert read_config(top, verb="pretrain", allowed=ALLOWED) == {"epochs": 4, "batch_size": 32}
    nested = _write(tmp_path, "run.YML", "pretrain:\n  tile: 128\n")
    assert read_config(nested, verb="pretrain", allowed=ALLOWED) == {"tile": 128}


def test_an_empty_file_holds_no_options(tmp_path):
    assert read_config(_write(tmp_path, "e.yaml", ""), verb="embed", allowed=ALLOWED) == {}
    assert read_config(_write(tmp_path, "e.toml", ""), verb="embed", allowed=ALLOWED) == {}


def test_missing_file(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(FileNotFoundError, match=r"config file .*absent\.toml does not exist"):
        read_config(path, verb="pretrain", allowed=ALLOWED)


def test_a_folder_is_not_a_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_config(tmp_path, verb="pretrain", allowed=ALLOWED)


@pytest.mark.parametrize(
    ("name", "text"),
    [("bad.toml", "epochs = = 3\n"), ("bad.yaml", "epochs: [1, 2\n")],
)
def test_unparsable_files(tmp_path, name, text):
    path = _write(tmp_path, name, text)
    with pytest.raises(ValueError, match=r"could not be parsed") as info:
        read_config(path, verb="pretrain", allowed=ALLOWED)
    assert name in str(info.value)
    assert info.value.__cause__ is not None


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = _write(tmp_path, "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a table of options, not list"):
        read_config(path, verb="pretrain", allowed=ALLOWED)


@pytest.mark.parametrize(
    ("name", "text"),
    [("v.toml", "pretrain = 3\n"), ("v.yaml", "pretrain: [1, 2]\n")],
)
def test_the_verb_entry_must_be_a_table(tmp_path, name, text):
    path = _write(tmp_path, name, text)
    with pytest.raises(ValueError, match=r"\[pretrain\] must be a table of options"):
        read_config(path, verb="pretrain", allowed=ALLOWED)


def test_unknown_key_is_named_with_the_valid_keys(tmp_path):
    path = _write(tmp_path, "run.toml", "[pretrain]\nepochs = 1\nlearning-rate = 0.1\n")
    with pytest.raises(ValueError) as info:
        read_config(path, verb="pretrain", allowed=["tile", "epochs"])
    message = str(info.value)
    assert "unknown key 'learning-rate' for 'pretrain'" in message
    assert "valid keys: ['epochs', 'tile']" in message


def test_another_verbs_table_is_an_unknown_key(tmp_path):
    path = _write(tmp_path, "run.toml", "[embed]\ntile = 64\n")
    with pytest.raises(ValueError, match="unknown key 'embed' for 'pretrain'"):
        read_config(path, verb="pretrain", allowed=ALLOWED)


# ----------------------------------------------------------------------------- storage options


def test_storage_options_from_json_and_mappings():
    assert parse_storage_options('{"anon": true, "client_kwargs": {"region_name": "eu"}}') == {
        "anon": True,
        "client_kwargs": {"region_name": "eu"},
    }
    given = {"anon": False}
    got = parse_storage_options(given)
    assert got == given and got is not given
    assert parse_storage_options(None) is None


def test_storage_options_that_are_not_json_do_not_repeat_the_value():
    secret = '{"secret": "hunter2-very-secret"'  # cut short: not valid JSON
    with pytest.raises(ValueError) as info:
        parse_storage_options(secret)
    message = str(info.value)
    assert "not valid JSON (line 1 column" in message
    assert "hunter2" not in message
    assert info.value.__cause__ is None


@pytest.mark.parametrize(("value", "kind"), [("[1, 2]", "JSON list"), ('"anon"', "JSON str")])
def test_storage_options_must_be_a_json_object(value, kind):
    with pytest.raises(ValueError, match=f"must be a JSON object .*not a {kind}"):
        parse_storage_options(value)


def test_storage_options_of_another_type():
    with pytest.raises(ValueError, match=r"must be a JSON object .*not a int"):
        parse_storage_options(3)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- secrets


def test_secret_values_by_key_name_nested_and_from_the_environment():
    options = {
        "key": "AKIAEXAMPLE1",
        "anon": False,
        "client_kwargs": {"region_name": "eu-west-1", "aws_session_token": "token-12345678"},
        "list": [{"password": "pass-word-1"}, {"user": "someone-long"}],
        "account_key": "short",  # under 8 characters: not masked
    }
    environ = {
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
        "AWS_SESSION_TOKEN": "tiny",
        "HOME": "/root/some/long/path",
    }
    assert secret_values(options, environ) == {
        "AKIAEXAMPLE1",
        "token-12345678",
        "pass-word-1",
        "s3cr3t-value",
    }


def test_secret_names_match_case_insensitively():
    assert secret_values({"Client_Secret": "ABCDEFGH12"}, {}) == {"ABCDEFGH12"}


def test_no_options_and_no_secret_environment():
    assert secret_values(None, {"PATH": "/usr/bin:/bin"}) == set()


def test_every_secret_environment_variable_is_read():
    environ = {name: f"value-of-{name}" for name in SECRET_ENV}
    assert secret_values({}, environ) == set(environ.values())
