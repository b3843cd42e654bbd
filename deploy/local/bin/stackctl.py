"""Starts, waits for, reports on and stops the local stack through process-compose's REST API.

Standard library only, so `make down` and `make status` work without the project venv.
Everything comes from the environment the Makefile exports (ports, RUN_DIR, SERVICES, ...).

  stackctl.py up | down | status | secrets | keys ARGS...
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ENV = os.environ
PC_PORT = int(ENV["PC_PORT"])
API = f"http://127.0.0.1:{PC_PORT}"
RUN_DIR = Path(ENV.get("RUN_DIR", ".run")).resolve()
LOG_DIR = RUN_DIR / "logs"
PC_LOG = RUN_DIR / "process-compose.log"
# Every process of a stack carries this in its environment, so `down` can find and end
# whatever a crashed process-compose left behind, and nothing else.
MARKER = "REGIONSTORE_STACK_RUN_DIR"
SERVICES = ENV.get("SERVICES", "gateway writer replicator recovery").split()
ALL_SERVICES = ("gateway", "writer", "replicator", "recovery")
STORE_IMPL = ENV.get("STORE_IMPL", "ferretdb")
REGIONS = ("region_1", "region_2", "region_3")
# The regional stores' processes, merged over PC_CONFIG: deploy/local/stores/<kind>.yaml.
STORES_CONFIG = Path(ENV.get("PC_CONFIG", ".")).parent / "stores" / f"{STORE_IMPL}.yaml"
INFRA_PORTS = {
    "process-compose API": "PC_PORT",
    "kafka": "KAFKA_PORT",
    "kafka controller": "KAFKA_CONTROLLER_PORT",
    "redis": "REDIS_PORT",
    "redis_idempotency": "IDEMPOTENCY_REDIS_PORT",
    "otlp_sink": "OTLP_PORT",
}
# Brokers 2 and 3 of `make up KAFKA_BROKERS=3`, merged over PC_CONFIG.
QUORUM = ENV.get("KAFKA_BROKERS", "1") == "3"
QUORUM_CONFIG = Path(ENV.get("PC_CONFIG", ".")).parent / "kafka-quorum.yaml"
if QUORUM:
    for _node in (2, 3):
        INFRA_PORTS[f"kafka_{_node}"] = f"KAFKA_{_node}_PORT"
        INFRA_PORTS[f"kafka_{_node} controller"] = f"KAFKA_{_node}_CONTROLLER_PORT"
# The second gateway, writer and replicator and the balancer of `make up SCALE=2`.
SCALE = ENV.get("SCALE", "1")
SCALE_CONFIG = Path(ENV.get("PC_CONFIG", ".")).parent / "scale.yaml"
if SCALE == "2":
    INFRA_PORTS.update(
        {
            "balancer": "BALANCER_PORT",
            "gateway_2": "GATEWAY_2_PORT",
            "writer_2": "WRITER_2_PORT",
            "replicator_2": "REPLICATOR_2_PORT",
        }
    )
# The fault points of `make up FAULTS=...`: Toxiproxy (links.yaml) in front of every dependency.
LINKS = ENV.get("LINKS", "") == "1"
LINKS_CONFIG = Path(ENV.get("PC_CONFIG", ".")).parent / "links.yaml"
LINKED = {
    "KAFKA": "KAFKA_LINK_PORT",
    "REDIS_PORT": "REDIS_LINK_PORT",
    "IDEMPOTENCY_REDIS_PORT": "IDEMPOTENCY_REDIS_LINK_PORT",
    "REGION_1_PORT": "REGION_1_LINK_PORT",
    "REGION_2_PORT": "REGION_2_LINK_PORT",
    "REGION_3_PORT": "REGION_3_LINK_PORT",
    "GATEWAY_PORT": "GATEWAY_LINK_PORT",
    "GATEWAY_2_PORT": "GATEWAY_2_LINK_PORT",
}
if LINKS:
    INFRA_PORTS["toxiproxy"] = "TOXIPROXY_PORT"
    INFRA_PORTS["kafka link listener"] = "KAFKA_LINK_BROKER_PORT"
    INFRA_PORTS.update({f"link {var}": link for var, link in LINKED.items()})
for _region in REGIONS:
    if STORE_IMPL == "ferretdb":
        INFRA_PORTS[f"{_region}_pg"] = f"{_region.upper()}_PG_PORT"
    INFRA_PORTS[_region] = f"{_region.upper()}_PORT"
SERVICE_PORTS = {
    "gateway": "GATEWAY_PORT",
    "writer": "WRITER_PORT",
    "replicator": "REPLICATOR_PORT",
    "recovery": "RECOVERY_PORT",
}
MAX_RESTARTS_WHILE_STARTING = 3
# Secrets made on first start, one random file each under RUN_DIR/secrets (0600). Each reaches
# process-compose as the upper-cased file name (AUTH_SECRET), which process-compose.yaml hands
# to the processes that need it under their setting's name; the key commands get that name.
# The infrastructure's passwords are no setting of their own (None): they go into the URLs of
# Redis and the stores, in process-compose.yaml, the stores' configs and the Makefile.
SECRETS_DIR = RUN_DIR / "secrets"
SECRETS: dict[str, str | None] = {
    "auth_secret": "REGIONSTORE_AUTH__SECRET",
    "redis_password": None,
    "store_password": None,
    "postgres_password": None,
}
OPERATOR_KEY = RUN_DIR / "operator.key"
STOPPED = ("Completed", "Error", "Skipped")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def api(method: str, path: str, timeout: float = 3) -> object:
    request = urllib.request.Request(API + path, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def api_answers() -> bool:
    try:
        api("GET", "/live", timeout=1)
    except (OSError, ValueError):
        return False
    return True


def processes() -> list[dict[str, object]]:
    data = api("GET", "/processes")
    assert isinstance(data, dict)
    order = [*INFRA_PORTS, *SERVICE_PORTS]
    return sorted(data["data"], key=lambda p: order.index(p["name"]) if p["name"] in order else 99)


def port_of(name: str) -> str:
    var = INFRA_PORTS.get(name) or SERVICE_PORTS.get(name)
    return ENV.get(var, "") if var else ""


def is_ready(proc: dict[str, object]) -> bool:
    if proc["status"] != "Running":
        return False
    return not proc["has_ready_probe"] or proc["is_ready"] == "Ready"


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def listener_pid(port: int) -> int | None:
    """The pid owning a listening TCP socket on port, from /proc (no ss/lsof needed)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                return pid
        except OSError:
            continue
    return None


def pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:120]


def marked(pid: int) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{MARKER}={RUN_DIR}".encode() in environ


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def leftovers() -> list[int]:
    mine = {os.getpid(), os.getppid()}
    return [pid for pid in pids() if pid not in mine and marked(pid) and alive(pid)]


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"  (no log at {path})"
    return "\n".join(f"  {line}" for line in text[-lines:])


def check_ports() -> None:
    wanted = dict(INFRA_PORTS)
    wanted.update({name: var for name, var in SERVICE_PORTS.items() if name in SERVICES})
    problems = []
    for name, var in wanted.items():
        port = int(ENV[var])
        if not listening(port):
            continue
        pid = listener_pid(port)
        owner = f" (pid {pid}: {command_line(pid)})" if pid else ""
        hint = "; it is left over from an earlier run: make down" if pid and marked(pid) else ""
        problems.append(f"port {port} ({name}) is in use by another process{owner}{hint}")
    if problems:
        fail("\n       ".join(problems))


def ensure_secrets() -> dict[str, str]:
    """Every secret by file name, made (random, mode 0600) where missing."""
    SECRETS_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    SECRETS_DIR.chmod(0o700)
    values = {}
    for name in SECRETS:
        path = SECRETS_DIR / name
        if not path.exists():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_urlsafe(48))
        values[name] = path.read_text().strip()
    return values


def make_secrets() -> None:
    """Make the missing secrets, so the Makefile can read them before the stack starts."""
    ensure_secrets()


def read_secrets() -> dict[str, str]:
    """Every secret by file name; fails when the stack never started."""
    missing = [name for name in SECRETS if not (SECRETS_DIR / name).exists()]
    if missing:
        fail(f"no {', '.join(missing)} in {SECRETS_DIR}: start the stack first (make up)")
    return {name: (SECRETS_DIR / name).read_text().strip() for name in SECRETS}


def client_env(values: dict[str, str]) -> dict[str, str]:
    """The environment of a command that uses the stack as its services do."""
    # The URL process-compose.yaml gives the services.
    port = ENV["REDIS_PORT"]
    redis_url = f"redis://regionstore:{values['redis_password']}@127.0.0.1:{port}/0"
    settings = {setting: values[name] for name, setting in SECRETS.items() if setting}
    return {**ENV, "REGIONSTORE_REDIS__URL": redis_url, **settings}


def keys_command(arguments: list[str]) -> list[str]:
    return [ENV.get("PYTHON", sys.executable), "-m", "regionstore_gateway.keys", *arguments]


def keys(arguments: list[str]) -> int:
    """Run the gateway's key command against this stack's Redis, with its secret."""
    env = client_env(read_secrets())
    return subprocess.run(keys_command(arguments), env=env, check=False).returncode


def ensure_operator_key() -> None:
    """A working operator key in RUN_DIR/operator.key (made, or registered again)."""
    if "gateway" not in SERVICES:
        return
    command = keys_command(["ensure", "--file", str(OPERATOR_KEY), "--role", "operator"])
    done = subprocess.run(
        command, env=client_env(read_secrets()), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        fail(f"could not make sure {OPERATOR_KEY} holds an operator key:\n{done.stderr}")
    what = done.stdout.strip().rpartition(": ")[2]
    print(f"operator API key in {OPERATOR_KEY} ({what}); more: make key ROLE=reader|writer")


def start_process_compose() -> None:
    for sub in ("logs", "kafka", "redis", "stores"):
        (RUN_DIR / sub).mkdir(parents=True, exist_ok=True)
    disabled = [name for name in ALL_SERVICES if name not in SERVICES]
    env = {**ENV, MARKER: str(RUN_DIR), "PC_DISABLED_PROCESSES": ",".join(disabled)}
    env.update({name.upper(): value for name, value in ensure_secrets().items()})
    env.update(dial_env())
    command = [
        ENV["PROCESS_COMPOSE"], "up", "--detached", "--disable-dotenv", "--ordered-shutdown",
        "--config", ENV["PC_CONFIG"], "--config", str(STORES_CONFIG),
        "--port", str(PC_PORT), "--log-file", str(PC_LOG),
    ]  # fmt: skip
    if QUORUM:
        command[-4:-4] = ["--config", str(QUORUM_CONFIG)]
    if SCALE == "2":
        command[-4:-4] = ["--config", str(SCALE_CONFIG)]
    if LINKS:
        command[-4:-4] = ["--config", str(LINKS_CONFIG)]
    PC_LOG.unlink(missing_ok=True)
    started = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if started.returncode != 0:
        fail(f"process-compose up failed:\n{started.stdout}{started.stderr}")
    deadline = time.monotonic() + 30
    while not api_answers():
        if time.monotonic() > deadline:
            fail(f"process-compose did not open its API on :{PC_PORT}\n{tail(PC_LOG)}")
        time.sleep(0.2)


def dial_env() -> dict[str, str]:
    """Where the services dial Kafka, the Redis pair, the stores and (the balancer) the
    gateways: DIAL_<what>, the dependency itself, or its Toxiproxy link with LINKS."""
    dial = {f"DIAL_{var}": ENV.get(var, "") for var in LINKED if var != "KAFKA"}
    dial["DIAL_KAFKA_BOOTSTRAP"] = ENV["KAFKA_BOOTSTRAP"]
    if LINKS:
        dial = {f"DIAL_{var}": ENV[link] for var, link in LINKED.items() if var != "KAFKA"}
        dial["DIAL_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{ENV['KAFKA_LINK_PORT']}"
    return dial


def wait_ready(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    restarts_before = {p["name"]: int(str(p["restarts"])) for p in processes()}
    while True:
        procs = [p for p in processes() if p["status"] != "Disabled"]
        waiting = [p for p in procs if not is_ready(p)]
        if not waiting:
            return
        for proc in waiting:
            restarts = int(str(proc["restarts"])) - restarts_before.get(proc["name"], 0)
            if restarts >= MAX_RESTARTS_WHILE_STARTING:
                not_ready(proc, f"keeps exiting ({restarts} restarts)")
        if time.monotonic() > deadline:
            not_ready(waiting[0], f"not ready after {timeout:.0f}s", others=waiting[1:])
        time.sleep(0.5)


def not_ready(
    proc: dict[str, object], why: str, others: list[dict[str, object]] | None = None
) -> None:
    name = proc["name"]
    also = f" (also waiting: {', '.join(str(p['name']) for p in others)})" if others else ""
    fail(
        f"{name} is {why}: status {proc['status']}, exit code {proc['exit_code']}{also}\n"
        f"last lines of {LOG_DIR / f'{name}.log'}:\n{tail(LOG_DIR / f'{name}.log')}\n"
        "the stack is left running for a look: make status / make logs P=NAME / make down"
    )


def up() -> None:
    if api_answers():
        print(f"stack already running (process-compose API on :{PC_PORT}); waiting until ready")
        if any(not (SECRETS_DIR / name).exists() for name in SECRETS):
            fail(f"this stack was started without {SECRETS_DIR}: make down && make up")
        # Processes stopped on purpose (`process stop`, a fault test) are brought back.
        for proc in processes():
            if proc["status"] in STOPPED:
                print(f"starting {proc['name']} (was {proc['status']})")
                api("POST", f"/process/start/{proc['name']}")
    else:
        if SCALE not in ("1", "2"):
            fail(f"SCALE must be 1 or 2, not {SCALE!r}")
        if LINKS and QUORUM:
            fail("FAULTS links run with one Kafka broker: make up FAULTS=... KAFKA_BROKERS=1")
        if SCALE == "2" and shutil.which("haproxy") is None:
            fail("haproxy not found: apt-get install haproxy (SCALE=2 balances two gateways)")
        check_ports()
        start_process_compose()
    wait_ready(float(ENV.get("UP_TIMEOUT", "300")))
    status()
    ensure_operator_key()


def down() -> None:
    tracked = []
    timeout = float(ENV.get("DOWN_TIMEOUT", "90"))
    if api_answers():
        tracked = [int(str(p["pid"])) for p in processes() if p["status"] == "Running"]
        # The server answers only once every process has stopped, or not at all if it exits
        # first; either way the loop below checks the outcome.
        with contextlib.suppress(OSError, ValueError):
            api("POST", "/project/stop", timeout=timeout)
    deadline = time.monotonic() + timeout
    while api_answers() or any(alive(pid) for pid in tracked) or leftovers():
        if time.monotonic() > deadline:
            break
        time.sleep(0.3)
    stragglers = leftovers()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in stragglers:
            print(f"ending leftover pid {pid} with {sig.name}: {command_line(pid)}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        end = time.monotonic() + 10
        while (stragglers := leftovers()) and time.monotonic() < end:
            time.sleep(0.2)
        if not stragglers:
            break
    if stragglers:
        fail(f"processes still running: {stragglers}")
    print(f"stack stopped; data kept in {RUN_DIR}")


def rss_mib(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return f"{int(line.split()[1]) / 1024:.0f}"
    except OSError:
        pass
    return "-"


def status() -> None:
    if not api_answers():
        print(f"stack is not running (no process-compose API on 127.0.0.1:{PC_PORT})")
        return
    row = "{:<17} {:<11} {:<9} {:>7} {:>6} {:>8} {:>8}"
    print(row.format("PROCESS", "STATUS", "READY", "PID", "PORT", "RESTARTS", "RSS_MiB"))
    for proc in processes():
        pid = int(str(proc["pid"])) if proc["status"] == "Running" else 0
        ready = "ready" if is_ready(proc) else "-" if proc["status"] == "Disabled" else "not ready"
        name = str(proc["name"])
        rss = rss_mib(pid) if pid else "-"
        cells = (name, proc["status"], ready, pid or "-", port_of(name), proc["restarts"], rss)
        print(row.format(*map(str, cells)))
    print(f"process-compose API: {API}  logs: {LOG_DIR}/")


def main() -> None:
    if sys.argv[1:2] == ["keys"]:
        raise SystemExit(keys(sys.argv[2:]))
    commands = {"up": up, "down": down, "status": status, "secrets": make_secrets}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        fail(f"usage: stackctl.py {'|'.join(commands)}")
    try:
        commands[sys.argv[1]]()
    except urllib.error.URLError as exc:
        fail(f"process-compose API on :{PC_PORT} failed: {exc.reason}")


if __name__ == "__main__":
    main()
