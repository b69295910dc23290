"""The way to a device: --jump and ~/.ssh/config's ProxyJump / ProxyCommand, resolved without connecting."""

from __future__ import annotations

import getpass

import pytest

from edgepack.device import inventory as inv
from edgepack.device.spec import JumpHost, parse_jumps
from edgepack.device.ssh import check_route, resolve_route
from edgepack.errors import DeviceError


@pytest.fixture
def ssh_config(tmp_path, monkeypatch):
    """Write TEXT as ~/.ssh/config in an empty HOME."""
    home = tmp_path / "home-ssh"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))

    def write(text: str):
        (home / ".ssh" / "config").write_text(text)
        return home

    return write


def device(**fields) -> inv.Device:
    return inv.make_device(**{"name": "pi", "host": "pi-lab", **fields})


def test_parse_jumps_reads_what_ssh_dash_j_takes():
    assert parse_jumps("gw, ops@10.0.0.1:2222,ssh://root@[fe80::1]:22") == [
        JumpHost("gw", "gw"),
        JumpHost("ops@10.0.0.1:2222", "10.0.0.1", "ops", 2222),
        JumpHost("ssh://root@[fe80::1]:22", "fe80::1", "root", 22),
    ]


@pytest.mark.parametrize("bad, says", [
    ("gw,,inner", "empty jump host"),
    ("gw:70000", "the port must be a number from 1 to 65535"),
    ("@gw", "expected [user@]host[:port]"),
    ("-oProxyCommand=touch", "expected [user@]host[:port]"),
    ("gw host", "expected [user@]host[:port]"),
    ("gw$(id)", "expected [user@]host[:port]"),  # never shell syntax: a gateway's shell or a ProxyCommand would run it
    ("a;b@gw", "expected [user@]host[:port]"),
])
def test_a_bad_jump_is_refused_with_one_line(bad, says):
    with pytest.raises(DeviceError) as err:
        device(jump=bad)
    assert err.value.message.startswith("invalid device 'pi': jump: ") and says in err.value.message


def test_inventory_without_jump_still_loads_and_jump_round_trips_with_comments(tmp_path):
    path = tmp_path / "devices.yaml"
    path.write_text("# my lab\ndevices:\n  pi4:  # the one on the shelf\n    host: 192.168.1.20\n")
    assert inv.get_device("pi4", path).jump is None
    inv.add_device(device(jump="gw , ops@10.0.0.1:2222"), path)
    text = path.read_text()
    assert "# the one on the shelf" in text and "jump: gw,ops@10.0.0.1:2222" in text
    assert inv.get_device("pi", path).jump == "gw,ops@10.0.0.1:2222"
    assert inv.get_device("pi", path).describe() == "pi-lab via gw,ops@10.0.0.1:2222"


def test_proxyjump_chain_from_the_config_with_each_hops_own_settings(ssh_config):
    home = ssh_config(
        "Host pi-lab\n  HostName 10.1.0.5\n  ProxyJump inner\n"
        "Host inner\n  HostName 10.1.0.1\n  User ops\n  Port 2201\n  IdentityFile ~/.ssh/inner_key\n  ProxyJump outer\n"
        "Host outer\n  HostName gw.example.org\n  User door\n"
    )
    (home / ".ssh" / "inner_key").write_text("key")
    route = resolve_route(device())
    assert [h.label for h in route.jumps] == ["outer", "inner"]
    assert [h.endpoint.where for h in route.jumps] == ["door@gw.example.org:22", "ops@10.1.0.1:2201"]
    assert route.jumps[1].endpoint.key_files == [str(home / ".ssh" / "inner_key")]
    assert route.target.where == f"{getpass.getuser()}@10.1.0.5:22" and route.proxy_command is None
    assert route.describe() == "via outer (door@gw.example.org:22), then inner (ops@10.1.0.1:2201)"


def test_jump_setting_wins_over_the_config_and_none_goes_straight(ssh_config):
    ssh_config("Host pi-lab\n  HostName 10.1.0.5\n  ProxyJump gw\nHost other\n  HostName 10.2.0.1\n  Port 2022\n")
    assert [h.endpoint.where for h in resolve_route(device(jump="ops@other")).jumps] == ["ops@10.2.0.1:2022"]
    assert resolve_route(device(jump="none")).direct


def test_a_jump_host_without_its_own_key_is_offered_the_devices(ssh_config, tmp_path):
    ssh_config("Host gw\n  HostName 10.0.0.1\n")
    hop = resolve_route(device(jump="gw", key=str(tmp_path / "lab_key"))).jumps[0]
    assert hop.endpoint.key_files == [str(tmp_path / "lab_key")] and not hop.endpoint.explicit_key


def test_proxycommand_from_the_config_has_its_tokens_expanded(ssh_config):
    ssh_config("Host pi-lab\n  HostName 10.1.0.5\n  User pi\n  ProxyCommand ssh -W %h:%p bastion\n")
    route = resolve_route(device())
    assert route.jumps == [] and route.proxy_command == "ssh -W 10.1.0.5:22 bastion"
    assert route.describe() == "via ProxyCommand"


def test_a_proxyjump_loop_is_refused(ssh_config):
    ssh_config("Host pi-lab\n  ProxyJump a\nHost a\n  ProxyJump b\nHost b\n  ProxyJump a\n")
    with pytest.raises(DeviceError, match="ProxyJump loop on the way to pi: a is reached through itself"):
        resolve_route(device())


def test_a_malformed_proxyjump_in_the_config_names_the_file(ssh_config):
    home = ssh_config("Host pi-lab\n  ProxyJump gw:notaport\n")
    with pytest.raises(DeviceError) as err:
        resolve_route(device())
    assert err.value.message.startswith(f"{home / '.ssh' / 'config'}: ProxyJump for host 'pi-lab': bad jump host")


def test_check_route_refuses_an_unknown_alias_with_the_close_ones(ssh_config):
    ssh_config("Host lab-gateway\n  HostName 10.0.0.1\n")
    with pytest.raises(DeviceError) as err:
        check_route(device(jump="lab-gatway"))
    assert err.value.message.startswith("unknown jump host 'lab-gatway' for device pi: not a Host in ")
    assert err.value.hint == "did you mean lab-gateway?"
    assert [h.label for h in check_route(device(jump="lab-gateway,10.9.9.9,localhost")).jumps] == [
        "lab-gateway", "10.9.9.9", "localhost"]


@pytest.mark.parametrize("fields", [{"host": "x;touch$IFS/tmp/pwned"}, {"user": "pi$(id)"}])
def test_names_a_proxycommand_would_run_as_shell_syntax_are_refused(ssh_config, fields):
    # ProxyCommand's %h and %r are put into its command line as they are: a name with shell syntax
    # would run on the gateway (OpenSSH 9.6 refuses such names for the same reason).
    ssh_config("Host *\n  ProxyCommand ssh gw nc %h %p\n")
    with pytest.raises(DeviceError) as err:
        resolve_route(device(**fields))
    assert "cannot be put into the ProxyCommand of" in err.value.message
    assert "it holds characters a shell would read" in err.value.message
