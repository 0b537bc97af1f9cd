"""scripts/setup.sh's glibc step, run against fake `ldd` and `apt-get` so it changes nothing."""
import os
import subprocess
from pathlib import Path

from conftest import REPO


def _run(tmp_path: Path, glibc: str, os_id: str = "debian", step: str = "glibc", **extra_env):
    bin_dir, apt_etc = tmp_path / "bin", tmp_path / "apt"
    bin_dir.mkdir()
    (apt_etc / "sources.list.d").mkdir(parents=True)
    (apt_etc / "preferences.d").mkdir()
    (bin_dir / "ldd").write_text(f"#!/bin/sh\necho 'ldd (Fake GLIBC {glibc}-1) {glibc}'\n")
    (bin_dir / "apt-get").write_text(
        f"#!/bin/sh\necho \"$DEBIAN_FRONTEND $*\" >> {tmp_path}/apt.log\n")
    for tool in ("ldd", "apt-get"):
        (bin_dir / tool).chmod(0o755)
    os_release = tmp_path / "os-release"
    os_release.write_text(f'ID={os_id}\nPRETTY_NAME="Some {os_id}"\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TLPIPE_APT_ETC": str(apt_etc),
           "TLPIPE_OS_RELEASE": str(os_release), "TLPIPE_SETUP_ONLY": step, **extra_env}
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], env=env,
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    return result, apt_etc


def test_old_glibc_on_debian_pins_trixie_low_and_upgrades_only_libc(tmp_path: Path):
    result, apt_etc = _run(tmp_path, "2.36")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "glibc 2.36 < 2.39" in result.stdout and "manylinux_2_39" in result.stdout
    assert "Suites: trixie" in (apt_etc / "sources.list.d" / "tlpipe-trixie.sources").read_text()
    pin = (apt_etc / "preferences.d" / "tlpipe-trixie").read_text()
    assert "Pin: release n=trixie" in pin and "Pin-Priority: 100" in pin
    calls = (tmp_path / "apt.log").read_text().splitlines()
    assert calls[0].endswith("update -qq")
    assert calls[1].startswith("noninteractive install -y") and "-t trixie" in calls[1]
    assert calls[1].split()[-2:] == ["libc6", "libstdc++6"]


def test_new_enough_glibc_touches_nothing(tmp_path: Path):
    result, _ = _run(tmp_path, "2.39")
    assert result.returncode == 0
    assert "system libraries are fine" in result.stdout
    assert not (tmp_path / "apt.log").exists()


def test_old_glibc_elsewhere_stops_with_a_clear_message(tmp_path: Path):
    result, _ = _run(tmp_path, "2.35", os_id="ubuntu")
    assert result.returncode == 1
    assert "only supported on Debian 12" in result.stdout and "Some ubuntu" in result.stdout
    assert not (tmp_path / "apt.log").exists()


def test_missing_mariadb_server_is_installed_without_questions(tmp_path: Path):
    result, _ = _run(tmp_path, "2.39", step="mariadb", TLPIPE_MARIADBD=str(tmp_path / "absent"))
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (tmp_path / "apt.log").read_text().splitlines()
    assert calls[0].endswith("update -qq")
    assert calls[1].startswith("noninteractive install -y") and calls[1].split()[-2:] == [
        "mariadb-server", "mariadb-client"]


def test_installed_mariadb_server_is_left_alone(tmp_path: Path):
    server = tmp_path / "mariadbd"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    result, _ = _run(tmp_path, "2.39", step="mariadb", TLPIPE_MARIADBD=str(server))
    assert result.returncode == 0 and "MariaDB server is installed" in result.stdout
    assert not (tmp_path / "apt.log").exists()
