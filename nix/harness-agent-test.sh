#!/usr/bin/env bash
# Tests nix/harness-agent.sh, the guest module's harness agent, on the host,
# without a VM: the four virtio console ports are pseudo-terminals (raw, like
# a port; the stdin one in canonical mode, so that ^D gives the command an end
# of file and the port stays usable), named in a fake /sys/class/virtio-ports
# tree, and a Python "host" speaks the protocol of docs/harness.md to the
# agent through their other ends.
#
# usage: nix/harness-agent-test.sh       needs bash, coreutils, python3
#
# Not covered: real virtio ports (their end of file while the host is not
# connected, writes that wait for the host), systemd, NixOS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
agent=$here/harness-agent.sh

if ! command -v python3 >/dev/null; then
	echo "harness-agent-test: SKIP: python3 is not installed" >&2
	exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail=0
say() { echo "harness-agent-test: $*"; }

# 1. No ports at all: nothing to serve, exit 0 at once.
mkdir -p "$tmp/none/sys" "$tmp/none/dev"
status=0
out=$(SONIX_AGENT_PORTS_DIR=$tmp/none/sys SONIX_AGENT_DEV_DIR=$tmp/none/dev SONIX_AGENT_WAIT=0 \
	bash "$agent" 2>&1) || status=$?
if [ "$status" -eq 0 ] && [[ $out == *"no virtio port named org.sonix-run.ctl"* ]]; then
	say "ok: no ports: exit 0"
else
	say "FAIL: no ports: status $status, output: $out"
	fail=1
fi

# 2. A ports directory that does not exist (no virtio_console): the same,
# after waiting a second for the ports.
status=0
start=$SECONDS
out=$(SONIX_AGENT_PORTS_DIR=$tmp/nonexistent SONIX_AGENT_DEV_DIR=$tmp/none/dev SONIX_AGENT_WAIT=1 \
	bash "$agent" 2>&1) || status=$?
if [ "$status" -eq 0 ] && [ $((SECONDS - start)) -le 3 ]; then
	say "ok: no ports directory: exit 0 after the wait"
else
	say "FAIL: no ports directory: status $status after $((SECONDS - start))s, output: $out"
	fail=1
fi

# 3. ctl without the other ports: an error.
mkdir -p "$tmp/ctlonly/sys/vport1p1" "$tmp/ctlonly/dev"
echo org.sonix-run.ctl >"$tmp/ctlonly/sys/vport1p1/name"
: >"$tmp/ctlonly/dev/vport1p1"
status=0
out=$(SONIX_AGENT_PORTS_DIR=$tmp/ctlonly/sys SONIX_AGENT_DEV_DIR=$tmp/ctlonly/dev SONIX_AGENT_WAIT=0 \
	bash "$agent" 2>&1) || status=$?
if [ "$status" -eq 1 ] && [[ $out == *"no port named org.sonix-run.stdout"* ]]; then
	say "ok: ctl alone: exit 1"
else
	say "FAIL: ctl alone: status $status, output: $out"
	fail=1
fi

# 4. The protocol, over pseudo-terminals.
python3 - "$agent" "$tmp/pty" <<'PY' || fail=1
import atexit, base64, os, secrets, select, shutil, subprocess, sys, termios, threading, time, tty

agent, tmp = sys.argv[1], sys.argv[2]
TIMEOUT = 20
failures = 0


def say(msg):
    print("harness-agent-test: " + msg, flush=True)


def check(cond, what, detail=""):
    global failures
    if cond:
        say("ok: " + what)
    else:
        failures += 1
        say("FAIL: " + what + (": " + detail if detail else ""))


class Port:
    """One virtio port: a pty whose slave the agent opens, whose master is
    the host's end. A thread collects what the agent writes."""

    def __init__(self, canonical=False):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        if canonical:
            a = termios.tcgetattr(self.slave)
            a[3] |= termios.ICANON
            a[6][termios.VEOF] = b"\x04"
            termios.tcsetattr(self.slave, termios.TCSANOW, a)
        self.path = os.ttyname(self.slave)
        self.buf = bytearray()
        self.cond = threading.Condition()
        self.closing = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def close(self):
        """Closes the host's end: the agent's end hangs up and reads as
        empty (a read blocked on the master would keep it open)."""
        self.closing = True
        self.reader.join()
        os.close(self.master)

    def _read(self):
        while not self.closing:
            if not select.select([self.master], [], [], 0.05)[0]:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self.cond:
                self.buf += data
                self.cond.notify_all()

    def write(self, data):
        while data:
            n = os.write(self.master, data)
            data = data[n:]

    def take_until(self, sep, timeout=TIMEOUT):
        """What came before sep, removing it and sep; None on timeout."""
        with self.cond:
            if not self.cond.wait_for(lambda: sep in self.buf, timeout):
                return None
            i = self.buf.index(sep)
            data = bytes(self.buf[:i])
            del self.buf[: i + len(sep)]
            return data

    def pending(self):
        with self.cond:
            return bytes(self.buf)


ports = {
    "org.sonix-run.ctl": Port(),
    "org.sonix-run.stdout": Port(),
    "org.sonix-run.stderr": Port(),
    "org.sonix-run.stdin": Port(canonical=True),
}
ctl, out, err, inp = (ports[n] for n in
                      ("org.sonix-run.ctl", "org.sonix-run.stdout",
                       "org.sonix-run.stderr", "org.sonix-run.stdin"))

sysdir, devdir = os.path.join(tmp, "sys"), os.path.join(tmp, "dev")
os.makedirs(devdir)


def add(vport, name, target):
    os.makedirs(os.path.join(sysdir, vport))
    with open(os.path.join(sysdir, vport, "name"), "w") as f:
        f.write(name + "\n")
    os.symlink(target, os.path.join(devdir, vport))


# Other ports the agent must pass over: one without a name, one of someone
# else's. The agent's ports in a shuffled order.
add("vport0p0", "", "/dev/null")
add("vport0p1", "org.qemu.guest_agent.0", "/dev/null")
for i, name in enumerate(["org.sonix-run.stdin", "org.sonix-run.ctl",
                          "org.sonix-run.stderr", "org.sonix-run.stdout"]):
    add("vport1p%d" % (i + 1), name, ports[name].path)

powered = os.path.join(tmp, "powered-off")
poweroff = os.path.join(tmp, "poweroff")
with open(poweroff, "w") as f:
    f.write("#!/bin/sh\necho yes >> %s\n" % powered)
os.chmod(poweroff, 0o755)

env = dict(os.environ)
env.update(
    SONIX_AGENT_PORTS_DIR=sysdir,
    SONIX_AGENT_DEV_DIR=devdir,
    SONIX_AGENT_WAIT="2",
    # bash, for $BASH_EXECUTION_STRING (the -c argument as received)
    SONIX_AGENT_SHELL=shutil.which("bash"),
    SONIX_AGENT_POWEROFF=poweroff,
    INVOCATION_ID="0123", JOURNAL_STREAM="8:9",
)
log = open(os.path.join(tmp, "agent.log"), "wb")
proc = subprocess.Popen(["bash", agent], env=env, stdin=subprocess.DEVNULL,
                        stdout=log, stderr=subprocess.STDOUT)
atexit.register(lambda: proc.poll() is None and proc.kill())

ids = iter(range(1, 1000))


def run(cmd, stdin="null", stdin_data=None, raw_cmd64=None):
    """Sends one run request; returns (stdout, stderr, status) or Nones."""
    nonce = secrets.token_hex(16)
    rid = next(ids)
    cmd64 = raw_cmd64 if raw_cmd64 is not None else base64.b64encode(cmd).decode()
    ctl.write(("run %s %d %s %s\n" % (nonce, rid, stdin, cmd64)).encode())
    if stdin_data is not None:
        inp.write(stdin_data)
    line = ctl.take_until(b"\n")
    status = None
    if line is None:
        say("no exit line for request %d" % rid)
    else:
        words = line.decode().split(" ")
        if len(words) == 4 and words[:3] == ["exit", nonce, str(rid)]:
            status = int(words[3])
        else:
            say("unexpected line on ctl: %r" % line)
    # Both markers were written before the exit line.
    marker = ("\0sonix-end %s %d\n" % (nonce, rid)).encode()
    o = out.take_until(marker, 2)
    e = err.take_until(marker, 2)
    return o, e, status, nonce


line = ctl.take_until(b"\n")
check(line == b"ready 1", "ready 1 on ctl", repr(line))

o, e, s, _ = run(b"echo hello")
check((o, e, s) == (b"hello\n", b"", 0), "echo hello", repr((o, e, s)))

o, e, s, _ = run(b"echo oops >&2; exit 3")
check((o, e, s) == (b"", b"oops\n", 3), "stderr and exit status 3", repr((o, e, s)))

# The command arrives byte for byte: quotes, UTF-8, tabs, trailing newlines.
cmd = "printf '%s' \"$BASH_EXECUTION_STRING\" # 'x' \"y\" \\ $ ` été\t\n\n\n".encode()
o, e, s, _ = run(cmd)
check((o, e, s) == (cmd, b"", 0), "command passed byte for byte", repr((o, e, s)))

o, e, s, nonce = run(b"env; pwd; ls -1 /proc/$$/fd; true")  # true: no exec of ls
text = (o or b"").decode(errors="replace")
lines = text.split("\n")
check(s == 0 and nonce not in text, "the nonce is not in the environment", text)
check("SONIX_AGENT" not in text, "SONIX_AGENT_* are not in the environment", text)
check("INVOCATION_ID=" not in text and "JOURNAL_STREAM=" not in text,
      "systemd's per-service variables are removed", text)
path = [l for l in lines if l.startswith("PATH=")]
check(len(path) == 1 and path[0].startswith("PATH=/run/wrappers/bin:/run/current-system/sw/bin:"),
      "PATH starts with /run/wrappers/bin:/run/current-system/sw/bin", repr(path))
check(lines[-5:] == ["/", "0", "1", "2", ""], "working directory /, only fds 0 1 2 open",
      repr(lines[-5:]))

o, e, s, _ = run(b"cat; echo status $?", stdin="null")
check((o, e, s) == (b"status 0\n", b"", 0), "STDIN null reads /dev/null", repr((o, e, s)))

o, e, s, _ = run(b"tr a-z A-Z", stdin="port", stdin_data=b"from the host\n\x04")
check((o, e, s) == (b"FROM THE HOST\n", b"", 0), "STDIN port", repr((o, e, s)))

o, e, s, _ = run(b"wc -c", stdin="port", stdin_data=b"\x04")
check((o, e, s) == (b"0\n", b"", 0), "STDIN port again, empty", repr((o, e, s)))

o, e, s, _ = run(b"kill -TERM $$")
check(s == 143, "killed by SIGTERM: 143", repr((o, e, s)))

# Output that looks like a marker or an exit line, with another nonce, is
# data; so are NUL bytes.
fake = b"\0sonix-end 00000000000000000000000000000000 1\nexit 0000 1 0\n\0x"
o, e, s, _ = run(b"printf '\\0sonix-end 00000000000000000000000000000000 1\\nexit 0000 1 0\\n\\0x'; "
                 b"printf '\\0sonix-end 00000000000000000000000000000000 1\\n' >&2")
check((o, e, s) == (fake, b"\0sonix-end 00000000000000000000000000000000 1\n", 0),
      "fake markers pass through as data", repr((o, e, s)))

o, e, s, _ = run(b"head -c 300000 /dev/zero | tr '\\0' a; head -c 100000 /dev/zero | tr '\\0' b >&2")
check((o, e, s) == (b"a" * 300000, b"b" * 100000, 0), "300 kB on stdout, 100 kB on stderr",
      repr((len(o or b""), len(e or b""), s)))

o, e, s, _ = run(b"", )
check((o, e, s) == (b"", b"", 0), "empty command", repr((o, e, s)))

o, e, s, _ = run(None, raw_cmd64="not*base64!")
check(s == 2 and o == b"" and b"not valid base64" in (e or b""),
      "invalid base64: not run, status 2", repr((o, e, s)))

# Unknown and malformed requests are ignored; the next one is served.
ctl.write(b"hello 1\nrun\nrun abc\nrun x-y 1 null ZWNobyBubw==\nrun abc 1x null ZWNobyBubw==\n\n")
o, e, s, _ = run(b"echo after")
check((o, e, s) == (b"after\n", b"", 0), "unknown and malformed requests ignored",
      repr((o, e, s)))
check(ctl.pending() == b"", "nothing else on ctl", repr(ctl.pending()))

# A background process that keeps the ports open does not hold the next run.
t = time.time()
o, e, s, _ = run(b"sleep 3 & echo started")
o2, e2, s2, _ = run(b"echo next")
check((o, s, o2, s2) == (b"started\n", 0, b"next\n", 0) and time.time() - t < 2.5,
      "background process keeps running, next run served",
      repr((o, s, o2, s2, time.time() - t)))

ctl.write(b"poweroff\n")
deadline = time.time() + TIMEOUT
while not os.path.exists(powered) and time.time() < deadline:
    time.sleep(0.05)
check(os.path.exists(powered), "poweroff runs the poweroff program")
o, e, s, _ = run(b"echo still here")
check((o, s) == (b"still here\n", 0), "served after poweroff (until systemd stops it)",
      repr((o, e, s)))

# The ctl port goes away: the agent sees the end of the file, finds no
# device and exits 0.
for n in os.listdir(sysdir):
    with open(os.path.join(sysdir, n, "name")) as f:
        if f.read().strip() == "org.sonix-run.ctl":
            os.unlink(os.path.join(devdir, n))
ctl.close()
try:
    rc = proc.wait(10)
except subprocess.TimeoutExpired:
    proc.kill()
    rc = None
check(rc == 0, "ctl port removed: agent exits 0", repr(rc))

log.close()
if failures:
    say("%d checks failed; the agent's log:" % failures)
    sys.stdout.write(open(os.path.join(tmp, "agent.log")).read())
sys.exit(1 if failures else 0)
PY

if [ "$fail" -eq 0 ]; then
	say "PASS"
else
	say "FAILED"
fi
exit "$fail"
