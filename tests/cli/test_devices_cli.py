"""`edgepack devices ...` through the CLI: inventory round trips, exit codes, no tracebacks.

The commands that talk to a real SSH server (`check`, `trust`) are exercised against the test
sshd in tests/integration/test_ssh_transport.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from edgepack.cli.app import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "home-dir"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


def run(*args: str, input: str | None = None):
    result = runner.invoke(app, list(args), input=input)
    assert "Traceback" not in result.output
    return result


def test_add_list_remove_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_pi").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n")
    inventory = str(tmp_path / "lab.yaml")
    added = run("devices", "add", "pi4", "--host", "192.168.1.20", "--user", "pi", "--port", "2222",
                "--key", "~/.ssh/id_pi", "--python", "/usr/bin/python3.11", "--workdir", "bench",
                "--target", "raspberry-pi-4", "--inventory", inventory)
    assert added.exit_code == 0, added.output
    assert "added device pi4 (pi@192.168.1.20:2222)" in added.output
    assert "edgepack devices trust pi4" in added.output

    listed = run("devices", "list", "--json", "--inventory", inventory)
    assert listed.exit_code == 0
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert list(rows) == ["local", "pi4"]
    assert rows["pi4"] == {
        "name": "pi4", "host": "192.168.1.20", "port": 2222, "user": "pi", "key": "~/.ssh/id_pi",
        "python": "/usr/bin/python3.11", "workdir": "bench", "target": "raspberry-pi-4", "connect_timeout_s": 10.0, "jump": None,
    }
    assert rows["local"]["python"] == sys.executable

    table = run("devices", "list", "--inventory", inventory)
    assert table.exit_code == 0
    assert "local" in table.output and "pi4" in table.output and "192.168.1.20" in table.output

    removed = run("devices", "remove", "pi4", "--inventory", inventory)
    assert removed.exit_code == 0 and "removed device pi4" in removed.output
    assert [r["name"] for r in json.loads(run("devices", "list", "--json", "--inventory", inventory).stdout)] == ["local"]


def test_default_inventory_is_in_the_user_config_dir(tmp_path):
    assert run("devices", "add", "orin", "--host", "orin.lan").exit_code == 0
    assert (tmp_path / "config" / "edgepack" / "devices.yaml").is_file()
    assert "orin" in [r["name"] for r in json.loads(run("devices", "list", "--json").stdout)]


def test_remove_of_an_unknown_name_suggests_the_close_one(tmp_path):
    inventory = str(tmp_path / "lab.yaml")
    run("devices", "add", "jetson-orin", "--host", "10.0.0.7", "--inventory", inventory)
    result = run("devices", "remove", "jetson-orn", "--inventory", inventory)
    assert result.exit_code == 2
    assert "unknown device 'jetson-orn'" in result.output and "did you mean jetson-orin?" in result.output


def test_duplicate_and_reserved_names_exit_2(tmp_path):
    inventory = str(tmp_path / "lab.yaml")
    assert run("devices", "add", "pi", "--host", "a", "--inventory", inventory).exit_code == 0
    dup = run("devices", "add", "pi", "--host", "b", "--inventory", inventory)
    assert dup.exit_code == 2 and "already exists" in dup.output
    local = run("devices", "add", "local", "--host", "b", "--inventory", inventory)
    assert local.exit_code == 2 and "built-in device" in local.output
    bad = run("devices", "add", "my pi", "--host", "b", "--inventory", inventory)
    assert bad.exit_code == 2 and "invalid device 'my pi'" in bad.output


def test_a_broken_inventory_is_reported_with_file_and_line(tmp_path):
    inventory = tmp_path / "lab.yaml"
    inventory.write_text("devices:\n  pi:\n    host: h\n    prot: 22\n")
    result = run("devices", "list", "--inventory", str(inventory))
    assert result.exit_code == 2
    assert f"{inventory}:4:5: devices.pi.prot: unknown key 'prot' (did you mean 'port'?)" in result.output.replace("\n", "")


def test_check_of_an_unknown_device_exits_2(tmp_path):
    result = run("devices", "check", "nope", "--inventory", str(tmp_path / "lab.yaml"))
    assert result.exit_code == 2 and "unknown device 'nope'" in result.output


def test_check_of_an_unreachable_device_exits_2_with_a_clear_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inventory = str(tmp_path / "lab.yaml")
    run("devices", "add", "gone", "--host", "127.0.0.1", "--port", str(port), "--connect-timeout", "3", "--inventory", inventory)
    result = run("devices", "check", "gone", "--inventory", inventory)
    assert result.exit_code == 2
    assert f"cannot reach gone at 127.0.0.1:{port}: connection refused" in result.output


def test_trust_of_the_local_device_is_refused(tmp_path):
    result = run("devices", "trust", "local", "--yes")
    assert result.exit_code == 2 and "needs no trust" in result.output


def test_cli_start_does_not_import_paramiko_or_runtimes():
    code = (
        "import sys, edgepack.cli.app; "
        "print(sorted(m for m in ('paramiko', 'tensorflow', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_add_refuses_a_key_that_is_missing_or_not_a_private_key(tmp_path):
    inventory = str(tmp_path / "lab.yaml")
    (tmp_path / "id.pub").write_text("ssh-ed25519 AAAAC3Nza me@host\n")
    (tmp_path / "notes.txt").write_text("hello\n")
    cases = {
        str(tmp_path / "nope"): "no such file",
        str(tmp_path / "id.pub"): "a public key: --key takes the private one",
        str(tmp_path / "notes.txt"): "not a private key file (OpenSSH or PEM)",
        str(tmp_path): "a directory, not a key file",
    }
    for key, expected in cases.items():
        result = run("devices", "add", "pi", "--host", "h", "--key", key, "--inventory", inventory)
        assert result.exit_code == 2 and expected in result.output, result.output
    assert not (tmp_path / "lab.yaml").exists()


def test_a_piped_device_list_prints_every_path_whole(tmp_path):
    import os

    inventory = tmp_path / "lab.yaml"
    python = "/opt/lab-tools/raspberry-pi-4-field-kit/virtual-environments/edgepack-device/bin/python3.11"
    added = run("devices", "add", "field-pi-with-a-long-name", "--host", "pi-4-in-the-greenhouse.lab.example.org", "--user", "pi",
                "--python", python, "--workdir", "/srv/edgepack/benches/field-pi-with-a-long-name", "--inventory", str(inventory))
    assert added.exit_code == 0, added.output
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    piped = subprocess.run([sys.executable, "-m", "edgepack", "devices", "list", "--inventory", str(inventory)],
                           capture_output=True, text=True, timeout=60, env=env)
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    for value in (python, "pi-4-in-the-greenhouse.lab.example.org", "field-pi-with-a-long-name", "/srv/edgepack/benches/field-pi-with-a-long-name"):
        assert any(value in line for line in lines), (value, piped.stdout)
    assert "…" not in piped.stdout


def test_a_relative_key_is_stored_absolute_and_a_linked_inventory_stays_a_link(tmp_path, monkeypatch):
    keys = tmp_path / "lab" / "keys"
    keys.mkdir(parents=True)
    (keys / "id_pi").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n")
    real = tmp_path / "dotfiles" / "devices.yaml"
    real.parent.mkdir()
    real.write_text("devices: {}\n")
    link = tmp_path / "devices.yaml"
    link.symlink_to(real)
    monkeypatch.chdir(tmp_path / "lab")
    added = run("devices", "add", "pi4", "--host", "10.0.0.2", "--key", "keys/id_pi", "--inventory", str(link))
    assert added.exit_code == 0, added.output
    monkeypatch.chdir(tmp_path)  # elsewhere, the key is still found
    rows = {r["name"]: r for r in json.loads(run("devices", "list", "--json", "--inventory", str(link)).stdout)}
    assert rows["pi4"]["key"] == str(keys / "id_pi")
    assert link.is_symlink() and "pi4" in real.read_text()
