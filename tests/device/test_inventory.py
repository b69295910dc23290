"""The device inventory: devices.yaml, the built-in `local` device, and errors that point at the file."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgepack.cli.app import app
from edgepack.device import inventory as inv
from edgepack.errors import DeviceError


def pi(**overrides) -> inv.Device:
    return inv.make_device(**{"name": "pi4", "host": "192.168.1.20", "user": "pi", **overrides})


def test_default_inventory_lives_in_the_user_config_dir(isolated_user_dirs, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert inv.default_inventory_path() == tmp_path / "cfg" / "edgepack" / "devices.yaml"
    inv.add_device(pi())
    assert (tmp_path / "cfg" / "edgepack" / "devices.yaml").is_file()
    assert inv.get_device("pi4").host == "192.168.1.20"


def test_a_missing_file_is_an_empty_inventory_with_the_local_device(tmp_path):
    store = inv.load_inventory(tmp_path / "none.yaml")
    assert store.names() == ["local"]
    local = store.get("local")
    assert local.is_local and local.python == sys.executable
    assert not (tmp_path / "none.yaml").exists()


def test_add_get_remove_round_trip(tmp_path):
    path = tmp_path / "devices.yaml"
    inv.add_device(pi(key="~/.ssh/id_pi", target="raspberry-pi-4", port=2222), path)
    inv.add_device(inv.make_device(name="orin", host="orin.lan"), path)
    store = inv.load_inventory(path)
    assert store.names() == ["local", "orin", "pi4"]
    got = store.get("pi4")
    assert (got.port, got.key, got.target, got.python, got.workdir, got.connect_timeout_s) == (
        2222, "~/.ssh/id_pi", "raspberry-pi-4", "python3", ".cache/edgepack", 10
    )
    assert store.get("orin").port is None and store.get("orin").user is None
    removed = inv.remove_device("orin", path)
    assert removed.host == "orin.lan"
    assert inv.load_inventory(path).names() == ["local", "pi4"]


def test_file_keeps_only_settings_that_differ_from_the_defaults(tmp_path):
    path = tmp_path / "devices.yaml"
    inv.add_device(pi(), path)
    assert path.read_text() == "devices:\n  pi4:\n    host: 192.168.1.20\n    user: pi\n"


def test_edits_keep_the_users_comments(tmp_path):
    path = tmp_path / "devices.yaml"
    path.write_text("# my lab\ndevices:\n  bench:  # the one on the shelf\n    host: 10.0.0.9\n")
    inv.add_device(pi(), path)
    inv.remove_device("pi4", path)
    text = path.read_text()
    assert "# my lab" in text and "# the one on the shelf" in text and "pi4" not in text


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path, monkeypatch):
    path = tmp_path / "inv" / "devices.yaml"
    inv.add_device(pi(), path)
    before = path.read_text()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(DeviceError, match=rf"^{path}: cannot write the device inventory: No space left on device$"):
        inv.add_device(inv.make_device(name="other", host="h"), path)
    assert path.read_text() == before
    assert [p.name for p in path.parent.iterdir()] == ["devices.yaml"]


def test_a_new_inventory_file_is_readable_as_the_umask_allows_and_an_edit_keeps_its_mode(tmp_path):
    path = tmp_path / "devices.yaml"
    umask = os.umask(0o022)
    try:
        inv.add_device(pi(), path)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o600)
    inv.add_device(inv.make_device(name="orin", host="orin.lan"), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# Kernel file systems refuse new files even to root: a write failure whoever runs the tests.
@pytest.mark.parametrize("path", ["/proc/edgepack-devices.yaml", "/proc/edgepack/devices.yaml", "/sys/edgepack-devices.yaml"])
def test_an_inventory_that_cannot_be_written_is_one_clear_error(isolated_user_dirs, path):
    result = CliRunner().invoke(app, ["devices", "add", "x", "--host", "h", "--inventory", str(path)])
    assert result.exit_code == 2, result.output
    assert f"error: {path}: cannot write the device inventory: " in result.output
    assert "--inventory FILE" in result.output and "internal error" not in result.output


@pytest.mark.parametrize(
    "content, message",
    [
        (b"devices:\n  pi4:\n    host: caf\xe9\n", r":3: the device inventory is not UTF-8 text \(byte 0xe9\)"),
        (b"\xff\xfe\x00d\x00e\x00v\x00", r":1: the device inventory is not UTF-8 text \(byte 0xff\)"),
        (b"devices:\n  pi4:\n    host: ca\x07fe\n", r":3:13: character #x0007 is not allowed in YAML"),
    ],
)
def test_an_inventory_that_is_not_text_names_the_file(isolated_user_dirs, tmp_path, content, message):
    path = tmp_path / "devices.yaml"
    path.write_bytes(content)
    with pytest.raises(DeviceError, match=rf"^{path}{message}"):
        inv.load_inventory(path)
    result = CliRunner().invoke(app, ["devices", "list", "--inventory", str(path)])
    assert result.exit_code == 2 and str(path) in result.output and "internal error" not in result.output


def test_duplicate_name_is_refused(tmp_path):
    path = tmp_path / "devices.yaml"
    inv.add_device(pi(), path)
    with pytest.raises(DeviceError, match="a device named 'pi4' already exists") as err:
        inv.add_device(pi(host="10.0.0.1"), path)
    assert "edgepack devices remove pi4" in err.value.hint
    assert inv.get_device("pi4", path).host == "192.168.1.20"


def test_local_cannot_be_added_removed_or_stored(tmp_path):
    path = tmp_path / "devices.yaml"
    with pytest.raises(DeviceError, match="built-in device"):
        inv.add_device(inv.make_device(name="local", host="x"), path)
    with pytest.raises(DeviceError, match="built-in device"):
        inv.remove_device("local", path)
    path.write_text("devices:\n  local:\n    host: x\n")
    with pytest.raises(DeviceError, match=rf"{path}:2:3: devices.local: 'local' is the built-in device"):
        inv.load_inventory(path)


def test_unknown_device_suggests_the_close_name(tmp_path):
    path = tmp_path / "devices.yaml"
    inv.add_device(pi(), path)
    with pytest.raises(DeviceError, match="unknown device 'pi5'") as err:
        inv.remove_device("pi5", path)
    assert err.value.hint == "did you mean pi4?"
    with pytest.raises(DeviceError) as err:
        inv.get_device("zzz", path)
    assert "edgepack devices list" in err.value.hint


def test_bad_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n  pi4:\n    host: [unclosed\n    user: pi\n")
    with pytest.raises(DeviceError, match=rf"^{path}:\d+:\d+: YAML syntax error"):
        inv.load_inventory(path)


def test_unknown_setting_names_the_line_and_the_close_key(tmp_path):
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n  pi4:\n    host: h\n    pyhton: /usr/bin/python3\n")
    with pytest.raises(DeviceError) as err:
        inv.load_inventory(path)
    assert err.value.message == f"{path}:4:5: devices.pi4.pyhton: unknown key 'pyhton' (did you mean 'python'?)"


def test_bad_values_name_the_line(tmp_path):
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n  pi4:\n    host: h\n    port: 99999\n")
    with pytest.raises(DeviceError, match=rf"{path}:4:5: devices.pi4.port: .*65535"):
        inv.load_inventory(path)
    path.write_text("devices:\n  pi4:\n    user: pi\n")
    with pytest.raises(DeviceError, match=rf"{path}:2:3: devices.pi4.host: Field required"):
        inv.load_inventory(path)
    path.write_text("devcies:\n  pi4: {host: h}\n")
    with pytest.raises(DeviceError, match=r":1:1: unknown key 'devcies' \(did you mean 'devices'\?\)"):
        inv.load_inventory(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(DeviceError, match="must be a mapping"):
        inv.load_inventory(path)


def test_make_device_rejects_bad_input_clearly():
    with pytest.raises(DeviceError, match=r"invalid device 'my pi': name: a device name is letters"):
        inv.make_device(name="my pi", host="h")
    with pytest.raises(DeviceError, match=r"connect_timeout_s"):
        inv.make_device(name="p", host="h", connect_timeout_s=0)
    assert inv.make_device(name="p", host="h", key=Path("/k")).key == "/k"


def test_devices_lists_local_first_then_by_name(tmp_path):
    path = tmp_path / "devices.yaml"
    for name in ("zeta", "alpha"):
        inv.add_device(inv.make_device(name=name, host=f"{name}.lan"), path)
    assert [d.name for d in inv.load_inventory(path).devices()] == ["local", "alpha", "zeta"]


def test_a_deeply_nested_inventory_is_refused_speaking_of_the_inventory(tmp_path):
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n  pi4:\n    host: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n")
    with pytest.raises(DeviceError) as exc:
        inv.load_inventory(path)
    assert "devices.yaml:3:" in exc.value.message and "nests deeper than 32 levels" in exc.value.message
    assert "the device inventory needs a few levels at most" in exc.value.hint and "profile" not in exc.value.hint
