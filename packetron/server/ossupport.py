"""Operating-system integration a server may ask for: process priority and the firewall."""
from __future__ import annotations

import os
import shutil
import subprocess

from packetron.log import server_logger, worker_logger

__all__ = ["raise_process_priority", "open_firewall_port", "PRIORITY_INCREMENT"]

# RAISE_PROCESS_PRIORITY: the niceness change (in a pool, inherited by its workers).
PRIORITY_INCREMENT = -5
# Each firewall tool gets this long to answer.
FIREWALL_COMMAND_TIMEOUT_SECONDS = 5.0


def raise_process_priority(increment: int = PRIORITY_INCREMENT) -> bool:
    """ServerFlags.RAISE_PROCESS_PRIORITY, best effort: lower this process's niceness.

    Returns:
        True if the priority changed; False if the OS refused (logged at debug level).
    """
    try:
        os.nice(increment)
    except OSError as exc:
        worker_logger.debug("could not raise the process priority: %s", exc)
        return False
    return True


def _run_quietly(argv: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False,
                              timeout=FIREWALL_COMMAND_TIMEOUT_SECONDS)
    except (OSError, subprocess.SubprocessError) as exc:
        server_logger.debug("firewall: %s failed: %s", argv[0], exc)
        return None


def open_firewall_port(port: int, protocol: str = "tcp") -> bool:
    """Allow inbound traffic to `port` in the host firewall, best effort (never raises).

    Used when a server is created with ``open_firewall=True``. Tries, in this order,
    the first tool that is installed and active: ufw (``ufw allow PORT/tcp``, a
    persistent rule), firewalld (``firewall-cmd --add-port``, runtime only) and iptables
    (an ACCEPT rule inserted in INPUT, only when INPUT drops or rejects anything). Rules
    are left in place when the server stops.

    Args:
        port: the bound port.
        protocol: "tcp" or "udp".

    Returns:
        True if a rule was added or already allowed the port; False otherwise.
    """
    spec = f"{port}/{protocol}"
    if shutil.which("ufw"):
        status = _run_quietly(["ufw", "status"])
        if status is not None and "Status: active" in status.stdout:
            done = _run_quietly(["ufw", "allow", spec])
            return _firewall_result("ufw", spec, done)
    if shutil.which("firewall-cmd"):
        state = _run_quietly(["firewall-cmd", "--state"])
        if state is not None and state.returncode == 0:
            done = _run_quietly(["firewall-cmd", f"--add-port={spec}"])
            return _firewall_result("firewalld", spec, done)
    if shutil.which("iptables"):
        rule = ["INPUT", "-p", protocol, "--dport", str(port), "-j", "ACCEPT"]
        listing = _run_quietly(["iptables", "-S", "INPUT"])
        if listing is None or listing.returncode != 0:
            return False
        if not any(word in listing.stdout for word in ("-P INPUT DROP", "-j DROP", "-j REJECT")):
            return False  # nothing is blocked: no rule to add
        present = _run_quietly(["iptables", "-C", *rule])
        if present is not None and present.returncode == 0:
            return True
        done = _run_quietly(["iptables", "-I", *rule])
        return _firewall_result("iptables", spec, done)
    return False


def _firewall_result(tool: str, spec: str,
                     done: subprocess.CompletedProcess[str] | None) -> bool:
    if done is not None and done.returncode == 0:
        server_logger.info("firewall: %s now allows %s", tool, spec)
        return True
    detail = "" if done is None else (done.stderr or done.stdout).strip()
    server_logger.warning("firewall: %s could not open %s %s", tool, spec, detail)
    return False
