"""Test support: a real MariaDB server from Debian's package, in a temp dir, as this user.

No system service: `mariadb-install-db` makes a data dir, `mariadbd` serves it on a free
loopback port (and a socket in the same dir), and a database and user with a password are made
through the root socket login. `make setup` installs the package (scripts/setup.sh).
"""
from __future__ import annotations

import getpass
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class MariaDB:
    port: int
    socket: str
    database: str
    user: str
    password: str
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path, database: str = "mlmd", user: str = "tlpipe") -> MariaDB:
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/bin"  # mariadbd is in sbin
    tools = {c: shutil.which(c, path=path) for c in ("mariadb-install-db", "mariadbd", "mariadb")}
    missing = [c for c, found in tools.items() if found is None]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not found: install Debian's mariadb-server (make setup)")
    data, sock, port = folder / "data", str(folder / "sock"), _free_port()
    me = getpass.getuser()
    subprocess.run([tools["mariadb-install-db"], "--no-defaults", f"--datadir={data}", f"--user={me}",
                    "--auth-root-authentication-method=socket", "--skip-test-db"],
                   check=True, capture_output=True, timeout=120)
    log = open(folder / "mariadbd.log", "wb")  # noqa: SIM115 (open as long as the server runs)
    process = subprocess.Popen(
        [tools["mariadbd"], "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={port}",
         "--bind-address=127.0.0.1", f"--user={me}", f"--pid-file={folder / 'pid'}", "--skip-log-bin",
         "--innodb-buffer-pool-size=32M"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while not Path(sock).exists():
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            raise RuntimeError(f"mariadbd did not start: {(folder / 'mariadbd.log').read_text()[-2000:]}")
        time.sleep(0.2)
    password = secrets.token_hex(12)
    sql = (f"CREATE DATABASE {database}; CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
           f"GRANT ALL ON {database}.* TO '{user}'@'127.0.0.1';")
    subprocess.run([tools["mariadb"], "--no-defaults", f"--socket={sock}", "-u", me, "-e", sql],
                   check=True, capture_output=True, timeout=60)
    return MariaDB(port, sock, database, user, password, process)
