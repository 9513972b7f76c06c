"""The deployment files, checked as a platform team would use them.

Run by scripts/check-deploy (which picks the Python environment holding
deploy/helm/requirements.txt). Steps, each failing the run on a finding:

1. Helm (the Go SDK as a library, helm-python-sdk; no helm binary): lint
   the chart, validate and render it for its default values and for each
   values file under deploy/helm/gkm/ci/, and validate every rendered
   manifest against the Kubernetes schemas (kubernetes-validate, strict:
   an unknown field is an error) of the oldest Kubernetes the chart
   supports and of the newest; the Prometheus Operator's objects, which
   those schemas do not hold, are checked by shape, and the
   PrometheusRule's rule groups by promtool. Values the schema or the
   chart's own checks must refuse are tried too: each must fail to render
   with a message naming the value.
2. The alerts: `promtool check rules` and `promtool test rules`.
3. The key servers the chart describes, run: the 3-key-server values
   rendered with loopback addresses and this suite's PostgreSQL, each pod's
   server.toml, secrets and command line taken from the rendered objects
   and run as real gkm-server processes; they must elect exactly one
   primary for the group (read from each one's /metrics), and the agent
   DaemonSet's command line (its dataplane and reports left out) must
   register with them.
4. The Prometheus end to end (tests/tests/prometheus_e2e.rs: a real
   Prometheus scraping a real key server with real agents, an alert firing
   and clearing), run here; scripts/test leaves it out of its own nextest
   run for that reason.

The last line says what was checked:
`helm ok: <N> manifests valid; alerts ok: <M> rules, <K> alert tests; prometheus e2e ok`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "gkm"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
# The chart's kubeVersion floor and the newest schemas kubernetes-validate has.
KUBE_OLDEST = "1.28.0"
PSQL = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
OPERATOR_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}


def fail(msg: str) -> None:
    print(f"check-deploy: {msg}", file=sys.stderr)
    sys.exit(1)


@contextlib.contextmanager
def quiet_go_logs():
    """Helm's Go code logs at INFO straight to file descriptor 2 (a line
    per load: "found symbolic link", the chart's link to the alerts file);
    its errors come back as exceptions. Silence the descriptor meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def render(values: dict, name: str = "gkm") -> list[dict]:
    with quiet_go_logs():
        chart = helm.Chart.load(str(CHART))
        chart.validate_schema(values)
        out = chart.render(values, name=name, namespace="gkm", is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["__source"] = path
                docs.append(doc)
    return docs


def check_operator_object(doc: dict, tmp: Path) -> None:
    kind = doc["kind"]
    meta = doc.get("metadata", {})
    if not meta.get("name"):
        fail(f"{kind}: no metadata.name")
    spec = doc.get("spec") or {}
    if kind == "ServiceMonitor":
        eps = spec.get("endpoints") or []
        if not eps or any(not e.get("port") for e in eps):
            fail("ServiceMonitor: every endpoint needs a named port")
        if not spec.get("selector", {}).get("matchLabels"):
            fail("ServiceMonitor: no selector")
        return
    # PrometheusRule: its spec is a rule file; promtool checks it, and it
    # must be the alerts file as shipped.
    shipped = yaml.safe_load(ALERTS.read_text())
    if spec != shipped:
        fail("PrometheusRule: its groups differ from deploy/prometheus/alerts.yml")
    f = tmp / "prometheusrule.yml"
    f.write_text(yaml.safe_dump(spec))
    run(["promtool", "check", "rules", str(f)])


def validate(docs: list[dict], label: str, tmp: Path) -> int:
    versions = [KUBE_OLDEST, kubernetes_validate.utils.latest_version()]
    n = 0
    for doc in docs:
        src = doc.pop("__source")
        if (doc.get("apiVersion"), doc.get("kind")) in OPERATOR_KINDS:
            check_operator_object(doc, tmp)
        else:
            for v in versions:
                try:
                    kubernetes_validate.validate(doc, v, strict=True)
                except Exception as e:  # the library's ValidationError and kin
                    fail(f"{label}: {src}: {doc.get('kind')} against Kubernetes {v}: {e}")
        n += 1
    return n


def run(cmd: list[str], **kw) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        fail(f"{' '.join(cmd)} failed:\n{p.stdout}{p.stderr}")
    return p.stdout + p.stderr


def lint(values: dict, label: str) -> None:
    with quiet_go_logs():
        report = helm.lint(str(CHART), values, strict=True, kube_version="v" + KUBE_OLDEST)
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    if report.get("errors") or bad:
        fail(f"helm lint ({label}): {report.get('errors')} {bad}")


# Values that must not render, and the words the refusal must contain.
REFUSED = [
    ({"keyServers": {"replicas": 3, "addresses": ["10.0.0.1"]}}, "keyServers.addresses"),
    ({"keyServers": {"replicas": 17}}, "replicas"),
    ({"keyServers": {"coop": {"priority": 0}}}, "priority"),
    ({"secrets": {"masterKey": "not-hex"}}, "masterKey"),
    ({"persistence": {"enabled": False}}, "secrets.masterKey"),
    ({"config": {"rekeySignature": "dsa"}}, "rekeySignature"),
    ({"config": {"groups": [{"name": "G", "group_id": 0, "tek": [{"src": "10.0.0.0/8", "dst": "10.0.0.0/8"}]}]}}, "group_id"),
    ({"surprise": 1}, "surprise"),
    ({"agent": {"enabled": True, "keyServers": ["10.0.0.1:848"]}}, "agent.pskSecret"),
    ({"oidc": {"issuer": "https://id.example.net", "clientId": "gkm"}}, "secrets.oidcClientSecret"),
    (
        {"keyServers": {"replicas": 2, "addresses": ["10.0.0.1", "10.0.0.2"]}, "secrets": {"coopPsk": "k"}},
        "secrets.rekeySigningKey",
    ),
    (
        {
            "keyServers": {"replicas": 2, "addresses": ["10.0.0.1", "10.0.0.2"]},
            "secrets": {"coopPsk": "k", "rekeySigningKey": "AAAA"},
        },
        "secrets.enrollmentCaCert",
    ),
    ({"secrets": {"enrollmentCaCert": "not a certificate"}}, "enrollmentCaCert"),
]


def check_refusals() -> None:
    for values, word in REFUSED:
        try:
            render(values)
        except helm.HelmError as e:
            if word not in str(e):
                fail(f"values {values} were refused without naming {word!r}: {e}")
            continue
        fail(f"values {values} rendered; they must be refused (naming {word!r})")


def check_helm(tmp: Path) -> int:
    n = 0
    cases = [("default values", {})]
    for f in sorted((CHART / "ci").glob("*.yaml")):
        cases.append((f"ci/{f.name}", yaml.safe_load(f.read_text())))
    for label, values in cases:
        lint(values, label)
        n += validate(render(values), label, tmp)
    check_refusals()
    return n


def check_alerts() -> tuple[int, int]:
    out = run(["promtool", "check", "rules", str(ALERTS)])
    m = re.search(r"SUCCESS: (\d+) rules found", out)
    if not m:
        fail(f"promtool check rules: no rule count in {out!r}")
    run(["promtool", "test", "rules", str(ALERT_TESTS)], cwd=ALERT_TESTS.parent)
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    alert_tests = sum(len(t.get("alert_rule_test", [])) for t in tests)
    return int(m.group(1)), alert_tests


def secret_files(docs: list[dict], kind: str) -> dict:
    for d in docs:
        if d["kind"] == kind:
            return d
    fail(f"no {kind} rendered")
    return {}


def run_key_servers(tmp: Path) -> str:
    """The 3-key-server values run as real processes on loopback."""
    pg = os.environ.get("GKM_TEST_POSTGRES_URL")
    if not pg:
        fail("GKM_TEST_POSTGRES_URL is not set (run through scripts/with-postgres or scripts/test)")
    server = ROOT / "target" / "debug" / "gkm-server"
    if not server.exists():
        fail(f"{server} is not built (cargo build -p gkm-server)")
    values = yaml.safe_load((CHART / "ci" / "values-coop-postgres.yaml").read_text())
    addrs = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    base = pg.rsplit("/", 1)[0]
    stamp = f"{os.getpid()}_{int(time.time())}"
    dbs = [f"gkm_chart_{stamp}_{i}" for i in range(3)]
    for db in dbs:
        run([PSQL, pg, "-q", "-c", f"CREATE DATABASE {db}"])
    values["keyServers"]["addresses"] = addrs
    values["agent"]["keyServers"] = [f"{a}:848" for a in addrs]
    # The agent below registers from loopback.
    values["psks"] = [{"prefix": "127.0.0.0/8", "key": "wan-gm-secret"}]
    values["database"]["urls"] = [f"{base}/{db}" for db in dbs]
    # The API on loopback in plain HTTP, as the chart does without TLS.
    values["tls"] = {"secretName": ""}
    values["oidc"] = {"issuer": "", "clientId": "", "roleClaim": "gkm_role"}
    values["publicUrl"] = ""
    docs = render(values)
    for d in docs:
        d.pop("__source", None)
    cm = secret_files(docs, "ConfigMap")["data"]
    secret = {k: base64.b64decode(v) for k, v in secret_files(docs, "Secret")["data"].items()}
    sts = secret_files(docs, "StatefulSet")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    procs = []
    metrics_ports = []
    http_ports = []
    try:
        for i, addr in enumerate(addrs):
            pod = tmp / f"pod-{i}"
            etc = pod / "etc" / "gkm"
            (etc / "secrets").mkdir(parents=True)
            (pod / "data").mkdir()
            os.chmod(pod / "data", 0o700)
            for k, v in secret.items():
                (etc / "secrets" / k).write_bytes(v)
            conf = cm["server.toml"].replace("/etc/gkm/", f"{etc}/")
            (etc / "server.toml").write_text(conf)
            env = {"PATH": os.environ["PATH"], "POD_INDEX": str(i), "GKM_KS_ADDRESS": addr}
            for e in container["env"]:
                if "value" in e:
                    env[e["name"]] = e["value"].replace("/etc/gkm/", f"{etc}/")
            metrics_port = free_port()
            metrics_ports.append(metrics_port)
            http_port = free_port()
            http_ports.append(http_port)
            args = []
            for a in container["args"]:
                a = a.replace("$(POD_INDEX)", str(i)).replace("/etc/gkm/", f"{etc}/")
                a = a.replace("/var/lib/gkm", str(pod / "data"))
                if a.startswith("--listen="):
                    a = f"--listen={addr}:848"
                elif a.startswith("--http="):
                    a = f"--http=127.0.0.1:{http_port}"
                elif a.startswith("--metrics="):
                    a = f"--metrics=127.0.0.1:{metrics_port}"
                args.append(a)
            log = open(pod / "log", "w")
            procs.append((subprocess.Popen([str(server), *args], env=env, stdout=log, stderr=log), pod))
        deadline = time.time() + 120
        roles: list[str] = []
        while time.time() < deadline:
            for p, pod in procs:
                if p.poll() is not None:
                    fail(f"gkm-server of {pod.name} exited {p.returncode}:\n{(pod / 'log').read_text()}")
            roles = [coop_role(port) for port in metrics_ports]
            if roles.count("primary") == 1 and roles.count("secondary") == 2:
                # One priority on every pod: the highest address wins.
                primary = addrs[roles.index("primary")]
                if primary != max(addrs, key=lambda a: tuple(map(int, a.split(".")))):
                    fail(f"the chart's key servers elected {primary}, not the highest address")
                agent = register_agent(docs, addrs, tmp, server.parent)
                enrolled = enroll_across(procs[0][1], http_ports[0], addrs[2], tmp, server.parent)
                return (
                    f"the chart's 3 key servers elected {primary} primary, 2 secondaries; "
                    f"the chart's agent {agent}; {enrolled}"
                )
            time.sleep(0.5)
        logs = "\n".join((pod / "log").read_text()[-3000:] for _, pod in procs)
        fail(f"the chart's key servers did not elect one primary in 120 s (roles {roles}):\n{logs}")
    finally:
        for p, _ in procs:
            p.terminate()
        for p, _ in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        for db in dbs:
            subprocess.run([PSQL, pg, "-q", "-c", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], capture_output=True)
    return ""


def register_agent(docs: list[dict], addrs: list[str], tmp: Path, bin_dir: Path) -> str:
    """The DaemonSet's agent command line, run once against the key servers:
    without the dataplane (it would route this host's traffic) and health
    reports; it must register (every key server of a COOP group registers
    GMs once it knows its primary; docs/COOP.md)."""
    ds = next((d for d in docs if d["kind"] == "DaemonSet"), None)
    if ds is None:
        fail("the 3-key-server values render no agent DaemonSet")
    c = ds["spec"]["template"]["spec"]["containers"][0]
    args = [
        a
        for a in c["args"]
        if not a.startswith(("--dataplane", "--protect=", "--report-", "--status-socket="))
    ]
    servers = [a.split("=", 1)[1] for a in args if a.startswith("--key-server=")]
    if servers != [f"{a}:848" for a in addrs]:
        fail(f"the agent's key servers are {servers}, not the chart's")
    args += [f"--status-socket={tmp}/agent.sock", "--bind=127.0.0.50:0", "--once", "--timeout=60"]
    env = {"PATH": os.environ["PATH"], "GKM_PSK": "wan-gm-secret"}
    p = subprocess.run([str(bin_dir / "gkm-agent"), *args], env=env, capture_output=True, text=True, timeout=90)
    line = next((l for l in p.stdout.splitlines() if l.startswith("registered group")), None)
    if p.returncode != 0 or line is None:
        fail(f"the chart's agent did not register ({p.returncode}):\n{p.stdout}{p.stderr[-3000:]}")
    return line.split(": ", 1)[0]


def enroll_across(pod0: Path, http_port: int, other: str, tmp: Path, bin_dir: Path) -> str:
    """An agent enrolled at key server 0 (a setup key for WAN-HOSTS) registers
    with its certificate at another key server of the group: the chart's
    shared enrollment CA, and the groups the certificate carries."""
    # The bootstrap admin token, in the data directory the chart names.
    found = sorted(pod0.rglob("admin-token"))
    if not found:
        fail(f"key server 0 wrote no admin-token under {pod0}")
    token = found[0].read_text().strip()
    body = json.dumps({"name": "chart-check", "groups": ["WAN-HOSTS"]}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/api/v1/setup-keys",
        data=body,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        key = json.loads(r.read())["key"]
    state = tmp / "enrolled"
    env = {"PATH": os.environ["PATH"], "GKM_SETUP_KEY": key}
    p = subprocess.run(
        [str(bin_dir / "gkm-agent"), "enroll", f"--controller=http://127.0.0.1:{http_port}",
         "--name=host-1.chart", f"--state-dir={state}"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    if p.returncode != 0:
        fail(f"enrollment at key server 0 failed:\n{p.stdout}{p.stderr[-3000:]}")
    p = subprocess.run(
        [str(bin_dir / "gkm-agent"), f"--enrollment={state}", f"--key-server={other}:848",
         "--group=1002", "--bind=127.0.0.51:0", f"--status-socket={tmp}/enrolled.sock",
         "--once", "--timeout=60"],
        env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=90,
    )
    line = next((l for l in p.stdout.splitlines() if l.startswith("registered group 1002")), None)
    if p.returncode != 0 or line is None:
        fail(f"the agent enrolled at key server 0 did not register at {other}:\n{p.stdout}{p.stderr[-3000:]}")
    return f"an agent enrolled at key server 0 registered at {other} with its certificate"


def coop_role(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return "down"
    for line in text.splitlines():
        m = re.match(r'gkm_coop_role\{group="WAN",role="(\w+)"\} 1(\.0)?$', line)
        if m:
            return m.group(1)
    return "none"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_e2e() -> None:
    # The suite's own flags, so that nothing is built again.
    out = run(
        ["cargo", "nextest", "run", "--workspace", "--locked", "--features",
         "gkm-server/test-hooks,gkm-agent/test-hooks", "-E", "binary(prometheus_e2e)"],
        cwd=ROOT,
    )
    if not re.search(r"[1-9]\d* tests? run: [1-9]\d* passed", out):
        fail(f"the Prometheus end to end ran no test:\n{out}")


def main() -> None:
    if shutil.which("promtool") is None:
        fail("promtool is required: apt-get install -y prometheus (.ci/run does)")
    with tempfile.TemporaryDirectory(prefix="gkm-check-deploy.") as t:
        tmp = Path(t)
        manifests = check_helm(tmp)
        rules, alert_tests = check_alerts()
        ran = run_key_servers(tmp)
        print(ran)
        prometheus_e2e()
    print(f"helm ok: {manifests} manifests valid; alerts ok: {rules} rules, {alert_tests} alert tests; prometheus e2e ok")


if __name__ == "__main__":
    main()
