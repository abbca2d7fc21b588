"""compose/check/hopper_checks.py - the structural and Hopper-specific checks of scripts/check-compose.

Generic tools validate each file against its format (docker compose, hadolint, promtool,
kubernetes-validate); this module checks what they cannot see: that the files agree with each
other and with the Rust code (metric names from shared/src/metrics.rs, job kinds from
shared/src/jobs.rs, environment variables the binaries read), and the parts no tool here has a
schema for (Grafana dashboard and provisioning, KEDA ScaledObjects, Dockerfile build context).

  python3 hopper_checks.py files
  python3 hopper_checks.py dockerfiles
  python3 hopper_checks.py compose RENDERED.json [RENDERED.json ...]   (docker compose config --format json)
  python3 hopper_checks.py grafana RENDERED.json
  python3 hopper_checks.py k8s BUILT.yaml [BUILT.yaml ...]             (kubectl kustomize output)

Each prints one line per problem and exits 1 if there was any. PromQL expressions are parsed by
`promtool check rules` (path in $PROMTOOL).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
PROBLEMS: list[str] = []
NOTES: list[str] = []


def note(what: str) -> None:
    NOTES.append(what)


def problem(where: str, what: str) -> None:
    PROBLEMS.append(f"{where}: {what}")


def rel(p: Path | str) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


# ---- YAML with duplicate keys rejected (PyYAML keeps the last one silently) ---------------------


class StrictLoader(yaml.SafeLoader):
    pass


def _mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False):
    # Only keys written in this mapping count: keys merged in with `<<:` may be overridden.
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml_all(path: Path) -> list:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.load_all(f, Loader=StrictLoader) if d is not None]


# ---- facts from the Rust code -----------------------------------------------------------------


@functools.cache
def rust_metric_names() -> set[str]:
    src = (ROOT / "shared/src/metrics.rs").read_text(encoding="utf-8")
    names = set(re.findall(r'pub const \w+: &str = "([a-z_:][a-z0-9_:]*)"', src))
    if not names:
        problem("shared/src/metrics.rs", "no metric names found (pub const X: &str = \"...\")")
    return names


@functools.cache
def known_metric_names() -> set[str]:
    """Metric names a query may use: Hopper's, with the histogram/summary series suffixes, the
    recording rules of compose/prometheus/rules/, and Prometheus' own `up`."""
    names = set()
    for n in rust_metric_names():
        names |= {n, f"{n}_bucket", f"{n}_sum", f"{n}_count"}
    for f in sorted((COMPOSE / "prometheus/rules").glob("*.yml")):
        for doc in load_yaml_all(f):
            for g in doc.get("groups", []):
                names |= {r["record"] for r in g.get("rules", []) if "record" in r}
    return names | {"up"}


@functools.cache
def job_kinds() -> set[str]:
    src = (ROOT / "shared/src/jobs.rs").read_text(encoding="utf-8")
    kinds = set(re.findall(r'JobKind::\w+ => "([a-z_]+)"', src))
    if not kinds:
        problem("shared/src/jobs.rs", "no job kinds found (JobKind::X => \"name\")")
    return kinds


@functools.cache
def known_env_vars() -> set[str]:
    """Variables the binaries read: literals in the crates' sources (Config, clap `env = ...`),
    the per-queue HOPPER_QUEUE_<KIND>_<SETTING> family, and RUST_LOG."""
    names = {"RUST_LOG"}
    for crate in ("shared", "queue", "api", "worker", "cli"):
        for f in (ROOT / crate).rglob("*.rs"):
            names |= set(re.findall(r'"((?:HOPPER|REDIS|DATABASE)_[A-Z0-9_]+)"', f.read_text(encoding="utf-8")))
    config = (ROOT / "shared/src/config.rs").read_text(encoding="utf-8")
    settings = set(re.findall(r'var\("([A-Z_]+)"\)', config))
    if not settings:
        problem("shared/src/config.rs", "no per-queue settings found (var(\"SETTING\"))")
    names |= {f"HOPPER_QUEUE_{k.upper()}_{s}" for k in job_kinds() for s in settings}
    return names


def check_env_names(where: str, names, known: set[str]) -> None:
    for n in names:
        if (n.startswith("HOPPER_") or n in ("REDIS_URL", "DATABASE_URL")) and n not in known:
            problem(where, f"environment variable {n} is not read by any Hopper binary (typo?)")


def check_worker_args(where: str, args: list[str], kinds: set[str]) -> tuple[set[str], str]:
    """Validates `--queues a,b --device d` and returns (queues, device)."""
    queues, device = set(), "auto"
    it = iter(range(len(args)))
    for i in it:
        a = args[i]
        val = None
        if "=" in a and a.startswith("--"):
            a, val = a.split("=", 1)
        elif a in ("--queues", "--device", "--model", "--precision") and i + 1 < len(args):
            val = args[i + 1]
            next(it, None)
        if a == "--queues":
            queues = {q.strip() for q in (val or "").split(",") if q.strip()}
        elif a == "--device":
            device = val or ""
        elif a in ("--model", "--precision"):
            pass
        else:
            problem(where, f"unknown worker argument {args[i]!r}")
    if not queues:
        problem(where, "worker has no --queues")
    for q in sorted(queues - kinds):
        problem(where, f"--queues names {q!r}, not a job kind ({', '.join(sorted(kinds))})")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        problem(where, f"--device {device!r} is not auto, cpu, cuda or cuda:N")
    return queues, device


# ---- PromQL: parsed by promtool, metric names checked against the code --------------------------

GRAFANA_VARS = {
    "$__rate_interval": "5m", "${__rate_interval}": "5m", "$__interval": "1m", "${__interval}": "1m",
    "$__range": "1h", "${__range}": "1h",
}


def check_promql(exprs: list[tuple[str, str]]) -> None:
    """exprs: (where, PromQL). Template variables must have been substituted."""
    known = known_metric_names()
    for where, e in exprs:
        for name in sorted(set(re.findall(r"\b((?:[a-z_]+:)?hopper_[a-z0-9_:]+|queue:[a-z0-9_:]+|kind:[a-z0-9_:]+)\b", e))):
            if name not in known:
                problem(where, f"metric {name} is not exported by Hopper (shared/src/metrics.rs) nor recorded by a rule")
    promtool = os.environ.get("PROMTOOL")
    if not promtool:
        problem("promql", "PROMTOOL is not set: PromQL not parsed")
        return
    rules = {"groups": [{"name": "check", "rules": [
        {"record": f"check:expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump(rules, f)
        path = f.name
    try:
        note(f"{len(exprs)} PromQL expressions parsed by promtool, metric names checked against shared/src/metrics.rs")
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if r.returncode != 0:
            out = r.stdout + r.stderr
            bad = {int(m) for m in re.findall(r"check:expr_(\d+)", out)}
            for i in sorted(bad):
                problem(exprs[i][0], f"PromQL does not parse: {exprs[i][1]}")
            if not bad:
                problem("promql", "promtool check rules failed: " + " ".join(out.split())[:400])
    finally:
        os.unlink(path)


# ---- files: every YAML/JSON parses, every file says what it is for ------------------------------


def cmd_files() -> None:
    files = sorted(p for p in COMPOSE.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for p in files:
        r = rel(p)
        if p.suffix in (".yml", ".yaml"):
            try:
                load_yaml_all(p)
            except yaml.YAMLError as e:
                problem(r, f"YAML does not parse: {' '.join(str(e).split())}")
        if p.suffix == ".json":
            try:
                doc = json.loads(p.read_text(encoding="utf-8"))
                if not isinstance(doc, dict) or not str(doc.get("__comment", "")).strip():
                    problem(r, "JSON file without a \"__comment\" saying what it is for")
            except json.JSONDecodeError as e:
                problem(r, f"JSON does not parse: {e}")
            continue
        if p.suffix == ".pyc":
            continue
        text = p.read_text(encoding="utf-8")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        head = lines[:2]
        if p.suffix == ".py":
            ok = bool(lines) and lines[0].startswith('"""')
        else:
            ok = any(ln.startswith("#") and not ln.startswith("#!") and not ln.startswith("# syntax=")
                     and not ln.startswith("# shellcheck") for ln in lines[:3])
        if not ok:
            problem(r, f"no header comment saying what the file is for (starts: {head[:1]})")
    for p in (COMPOSE / "libtorch-cuda.sh", ROOT / "scripts/check-compose"):
        if not os.access(p, os.X_OK):
            problem(rel(p), "not executable")


# ---- Dockerfiles --------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out, buf, start = [], "", 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if not buf:
            start = n
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        ins, _, args = buf.partition(" ")
        out.append((start, ins.upper(), args.strip()))
        buf = ""
    return out


def dockerignore_patterns() -> list[tuple[bool, str]]:
    p = ROOT / ".dockerignore"
    if not p.exists():
        problem(".dockerignore", "missing: the build context would carry target/ and .cache/")
        return []
    pats = []
    for line in p.read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        neg = s.startswith("!")
        pats.append((neg, s.lstrip("!").strip("/")))
    return pats


def ignored(path: str, pats: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent dir excludes it."""
    parts = path.strip("/").split("/")
    result = False
    for neg, pat in pats:
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            regex = re.escape(pat).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
            if re.fullmatch(regex, prefix):
                result = not neg
                break
    return result


def workspace_bins() -> dict[str, set[str]]:
    """package name -> its binaries, for every workspace member."""
    out = {}
    members = re.search(r"members\s*=\s*\[([^\]]*)\]", (ROOT / "Cargo.toml").read_text(encoding="utf-8"))
    for m in re.findall(r'"([^"]+)"', members.group(1) if members else ""):
        text = (ROOT / m / "Cargo.toml").read_text(encoding="utf-8")
        name = re.search(r'^\[package\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.M | re.S)
        if name:
            out[name.group(1)] = set(re.findall(r'^\[\[bin\]\]\s*\n\s*name\s*=\s*"([^"]+)"', text, re.M))
    return out


def cmd_dockerfiles() -> None:
    pats = dockerignore_patterns()
    for must in ("target", ".cache", ".git"):
        if pats and not ignored(must, pats):
            problem(".dockerignore", f"does not exclude {must}/")
    bins = workspace_bins()
    for df in sorted(COMPOSE.glob("Dockerfile.*")):
        r = rel(df)
        ins = dockerfile_instructions(df)
        stages: list[str] = []
        final: list[tuple[int, str, str]] = []
        built_bins: set[str] = set()
        for line, op, args in ins:
            where = f"{r}:{line}"
            if op == "FROM":
                m = re.search(r"\bAS\s+(\S+)", args, re.I)
                stages.append(m.group(1) if m else f"#{len(stages)}")
                final = []
                continue
            final.append((line, op, args))
            if op in ("COPY", "ADD"):
                words = shlex.split(args)
                flags = [w for w in words if w.startswith("--")]
                paths = [w for w in words if not w.startswith("--")]
                if words and words[0].startswith("["):
                    problem(where, "JSON-form COPY not checked")
                    continue
                src_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
                if src_stage is not None:
                    if src_stage not in stages[:-1]:
                        problem(where, f"COPY --from={src_stage}: no earlier stage of that name")
                    continue
                for s in paths[:-1]:
                    s_rel = s.rstrip("/") or "."
                    if s_rel == ".":
                        continue
                    if not (ROOT / s_rel).exists():
                        problem(where, f"COPY source {s} does not exist in the build context (the repo root)")
                    elif ignored(s_rel, pats):
                        problem(where, f"COPY source {s} is excluded by .dockerignore")
            if op == "RUN":
                for lead, script in re.findall(r"(^|\s)((?:scripts|compose)/[\w./-]+)", args):
                    p = ROOT / script
                    sourced = re.search(r"(^|\s)(\.|source)\s+" + re.escape(script), args)
                    if not p.exists():
                        problem(where, f"RUN uses {script}, which does not exist")
                    elif not sourced and not os.access(p, os.X_OK):
                        problem(where, f"RUN executes {script}, which is not executable")
                if "cargo build" in args:
                    if "--mount=type=cache" not in args:
                        problem(where, "cargo build without cache mounts")
                    if "--locked" not in args:
                        problem(where, "cargo build without --locked")
                    for pkg in re.findall(r"-p\s+(\S+)", args):
                        if pkg not in bins:
                            problem(where, f"cargo -p {pkg}: no such workspace package ({', '.join(sorted(bins))})")
                        else:
                            built_bins |= bins[pkg]
        ops = {op for _, op, _ in final}
        for need in ("USER", "HEALTHCHECK", "ENTRYPOINT"):
            if need not in ops:
                problem(r, f"final stage has no {need}")
        for line, op, args in final:
            if op == "USER" and args.split(":")[0] in ("root", "0"):
                problem(f"{r}:{line}", "final stage runs as root")
            if op == "ENTRYPOINT":
                try:
                    exe = json.loads(args)[0]
                except (ValueError, IndexError):
                    problem(f"{r}:{line}", "ENTRYPOINT is not in exec (JSON) form")
                    continue
                if Path(exe).name not in built_bins:
                    problem(f"{r}:{line}", f"ENTRYPOINT {exe} is not a binary the builder stage builds ({sorted(built_bins)})")
            if op == "HEALTHCHECK" and "/health/" not in args:
                problem(f"{r}:{line}", "HEALTHCHECK does not probe a /health/ endpoint")
            if op == "ENV":
                names = re.findall(r"(?:^|\s)([A-Z_][A-Z0-9_]*)=", args)
                check_env_names(f"{r}:{line}", names, known_env_vars())
        if len(stages) < 2:
            problem(r, "not multi-stage")
        note(f"{r}: {len(ins)} instructions, {len(stages)} stages")


# ---- docker compose (rendered by `docker compose config --format json`) -------------------------


def duration_s(v) -> float:
    if isinstance(v, (int, float)):
        return v / 1e9  # compose JSON may give nanoseconds
    total = 0.0
    for num, unit in re.findall(r"([\d.]+)(ms|us|ns|h|m|s)", str(v)):
        total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[unit]
    return total


def dockerfile_has_healthcheck(build: dict) -> bool:
    df = Path(build.get("context", ROOT)) / build.get("dockerfile", "Dockerfile")
    return df.exists() and any(op == "HEALTHCHECK" for _, op, _ in dockerfile_instructions(df))


def cmd_compose(rendered: list[str]) -> None:
    kinds, known = job_kinds(), known_env_vars()
    prom = yaml.safe_load((COMPOSE / "prometheus/prometheus.yml").read_text(encoding="utf-8"))
    for path in rendered:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
        label = f"compose[{Path(path).stem}]"
        services = cfg.get("services", {})
        served: set[str] = set()
        for name, svc in services.items():
            where = f"{label} {name}"
            env = svc.get("environment") or {}
            image = svc.get("image", "")
            build = svc.get("build")
            if build:
                df = Path(build.get("context", "")) / build.get("dockerfile", "Dockerfile")
                if not df.exists():
                    problem(where, f"build.dockerfile {df} does not exist")
                if Path(build.get("context", "")).resolve() != ROOT:
                    problem(where, "build.context is not the repository root")
                want = {"Dockerfile.api": "/api:", "Dockerfile.worker": "/worker:", "Dockerfile.worker-cuda": "/worker-cuda:"}.get(df.name)
                if want and want not in image:
                    problem(where, f"image {image} does not match its Dockerfile {df.name}")
            for dep, d in (svc.get("depends_on") or {}).items():
                if dep not in services:
                    problem(where, f"depends_on {dep}: no such service")
                elif d.get("condition") == "service_healthy":
                    t = services[dep]
                    if not t.get("healthcheck") and not (t.get("build") and dockerfile_has_healthcheck(t["build"])):
                        problem(where, f"waits for {dep} to be healthy, but {dep} has no healthcheck")
            restart = svc.get("restart", "no")
            if not re.fullmatch(r"no|always|unless-stopped|on-failure(:\d+)?", str(restart)):
                problem(where, f"restart {restart!r} is not no, always, unless-stopped or on-failure[:N]")
            is_hopper = bool(build) and "Dockerfile" in str(build.get("dockerfile", ""))
            if not is_hopper:
                continue
            check_env_names(where, env.keys(), known)
            for need in ("REDIS_URL", "DATABASE_URL"):
                if not env.get(need):
                    problem(where, f"{need} is not set")
            for k, v in env.items():
                if k.endswith("_MS") and not re.fullmatch(r"\d+", str(v)):
                    problem(where, f"{k}={v!r} is not a whole number of milliseconds")
            if str(env.get("HOPPER_LOG_FORMAT", "json")) != "json":
                problem(where, "HOPPER_LOG_FORMAT is not json")
            if "worker" in str(build.get("dockerfile")):
                qs, device = check_worker_args(where, svc.get("command") or [], kinds)
                replicas = (svc.get("deploy") or {}).get("replicas", 1)
                if replicas:
                    served |= qs
                grace_ms = int(env.get("HOPPER_SHUTDOWN_GRACE_MS", 30000))
                stop = duration_s(svc.get("stop_grace_period", "10s"))
                if stop * 1000 < grace_ms + 5000:
                    problem(where, f"stop_grace_period {stop:g}s is not at least HOPPER_SHUTDOWN_GRACE_MS + 5 s ({grace_ms} ms): Docker would SIGKILL a draining worker")
                res = (svc.get("deploy") or {}).get("resources") or {}
                if not (res.get("limits") or {}).get("memory") or not (res.get("limits") or {}).get("cpus"):
                    problem(where, "worker without cpu and memory limits")
                devices = (res.get("reservations") or {}).get("devices") or []
                gpu = any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices)
                cuda_image = str(build.get("dockerfile", "")).endswith("-cuda")
                if device.startswith("cuda") and not (gpu and cuda_image):
                    problem(where, "--device cuda needs the CUDA image and an nvidia GPU reservation")
                if gpu and not device.startswith("cuda"):
                    problem(where, "reserves a GPU but runs --device " + device)
                if name not in str(prom):
                    problem(where, "not scraped by compose/prometheus/prometheus.yml")
            if "HOPPER_API_ADDR" in env:
                port = str(env["HOPPER_API_ADDR"]).rsplit(":", 1)[-1]
                published = {str(p.get("target")) for p in svc.get("ports") or []}
                if port not in published:
                    problem(where, f"HOPPER_API_ADDR port {port} is not the published container port {sorted(published)}")
        missing = kinds - served
        if missing:
            problem(label, f"no worker service (with replicas) serves {', '.join(sorted(missing))}")
        # Prometheus scrapes names that exist.
        for job in prom.get("scrape_configs", []):
            for sd in job.get("dns_sd_configs", []):
                for n in sd.get("names", []):
                    if n not in services and "gpu" not in n:
                        problem(f"compose/prometheus/prometheus.yml job {job['job_name']}", f"scrapes {n}, not a compose service")
        for n in ("redis", "postgres"):
            if n in services and not services[n].get("volumes"):
                problem(f"{label} {n}", "no volume: data would not survive the container")
        if "redis" in services:
            cmd = " ".join(map(str, services["redis"].get("command") or []))
            for flag in ("--appendonly yes", "--appendfsync everysec"):
                if flag not in cmd:
                    problem(f"{label} redis", f"command lacks {flag}")
        for n, svc in services.items():
            for k, v in (svc.get("environment") or {}).items():
                if re.search(r"PASSWORD", k) and v and "check-only" not in str(v):
                    problem(f"{label} {n}", f"{k} has a value that did not come from the environment")
                if k == "DATABASE_URL" and "check-only" not in str(v):
                    problem(f"{label} {n}", "DATABASE_URL's password did not come from POSTGRES_PASSWORD")
        note(f"{label}: {len(services)} services; worker queues, devices, grace periods, limits, env names checked")


# ---- Grafana ------------------------------------------------------------------------------------

PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "text", "row", "heatmap", "piechart", "barchart", "state-timeline", "logs"}


def cmd_grafana(rendered: str) -> None:
    cfg = json.loads(Path(rendered).read_text(encoding="utf-8"))
    graf = cfg["services"].get("grafana", {})
    mounts = {Path(v["source"]).resolve(): v["target"] for v in graf.get("volumes", []) if v.get("type") == "bind"}
    prov_dir = COMPOSE / "grafana/provisioning"
    if mounts.get(prov_dir.resolve()) != "/etc/grafana/provisioning":
        problem("compose grafana", "compose/grafana/provisioning is not mounted at /etc/grafana/provisioning")
    dash_target = mounts.get((COMPOSE / "grafana/dashboards").resolve())
    ds_uids = set()
    for f in sorted((prov_dir / "datasources").glob("*.y*ml")):
        for doc in load_yaml_all(f):
            if doc.get("apiVersion") != 1:
                problem(rel(f), "apiVersion is not 1")
            for ds in doc.get("datasources", []):
                for k in ("name", "type", "url", "uid"):
                    if not ds.get(k):
                        problem(rel(f), f"datasource without {k}")
                if ds.get("type") == "prometheus":
                    ds_uids.add(ds.get("uid"))
                    m = re.match(r"https?://([^:/]+)", ds.get("url", ""))
                    if not m or m.group(1) not in cfg["services"]:
                        problem(rel(f), f"datasource url {ds.get('url')} does not name a compose service")
    paths = []
    for f in sorted((prov_dir / "dashboards").glob("*.y*ml")):
        for doc in load_yaml_all(f):
            if doc.get("apiVersion") != 1:
                problem(rel(f), "apiVersion is not 1")
            for p in doc.get("providers", []):
                if p.get("type") != "file" or not (p.get("options") or {}).get("path"):
                    problem(rel(f), "provider is not of type file with options.path")
                paths.append((p.get("options") or {}).get("path"))
    if dash_target not in paths:
        problem("compose grafana", f"compose/grafana/dashboards is mounted at {dash_target}, which no dashboard provider reads ({paths})")
    home = (graf.get("environment") or {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    dashboards = sorted((COMPOSE / "grafana/dashboards").glob("*.json"))
    if home and dash_target and not any(home == f"{dash_target}/{d.name}" for d in dashboards):
        problem("compose grafana", f"GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH {home} is not a provisioned dashboard")
    if not dashboards:
        problem("compose/grafana/dashboards", "no dashboard")
    exprs = []
    for f in dashboards:
        r = rel(f)
        d = json.loads(f.read_text(encoding="utf-8"))
        for k in ("uid", "title", "schemaVersion", "panels", "templating"):
            if k not in d:
                problem(r, f"no {k}")
        variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
        dsv = [v for v in variables.values() if v.get("type") == "datasource"]
        for v in dsv:
            if v.get("query") != "prometheus" or (v.get("current") or {}).get("value") not in ds_uids:
                problem(r, f"datasource variable ${v['name']} does not default to a provisioned Prometheus ({sorted(ds_uids)})")
        ds_refs = {f"${{{v['name']}}}" for v in dsv} | ds_uids
        for v in variables.values():
            if v.get("type") == "query":
                if (v.get("datasource") or {}).get("uid") not in ds_refs:
                    problem(r, f"variable ${v['name']} queries {v.get('datasource')}, not the provisioned Prometheus")
                q = v.get("definition") or (v.get("query") or {}).get("query", "")
                m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q.strip())
                if not m:
                    problem(r, f"variable ${v['name']}: query {q!r} is not label_values(SELECTOR, LABEL)")
                else:
                    exprs.append((f"{r} variable ${v['name']}", m.group(1)))
        ids, occupied = set(), {}
        panels = d.get("panels", [])
        if len([p for p in panels if p.get("type") != "row"]) < 6:
            problem(r, "fewer than 6 panels")
        used_metrics = ""
        for p in panels:
            pw = f"{r} panel {p.get('id')} {p.get('title')!r}"
            if p.get("id") in ids or not isinstance(p.get("id"), int):
                problem(pw, "missing or duplicate id")
            ids.add(p.get("id"))
            if p.get("type") not in PANEL_TYPES:
                problem(pw, f"unknown panel type {p.get('type')}")
            g = p.get("gridPos") or {}
            if not all(isinstance(g.get(k), int) for k in "xywh") or g["x"] < 0 or g["w"] <= 0 or g["h"] <= 0 or g["x"] + g["w"] > 24:
                problem(pw, f"bad gridPos {g}")
            else:
                for x in range(g["x"], g["x"] + g["w"]):
                    for y in range(g["y"], g["y"] + g["h"]):
                        if (x, y) in occupied:
                            problem(pw, f"overlaps panel {occupied[(x, y)]}")
                            break
                        occupied[(x, y)] = p.get("id")
                    else:
                        continue
                    break
            if p.get("type") == "row":
                continue
            if not p.get("title"):
                problem(pw, "no title")
            ds = p.get("datasource") or {}
            if ds.get("type") != "prometheus" or ds.get("uid") not in ds_refs:
                problem(pw, f"datasource {ds} is neither the provisioned Prometheus nor the datasource variable")
            targets = p.get("targets") or []
            if not targets:
                problem(pw, "no targets")
            refs = [t.get("refId") for t in targets]
            if len(set(refs)) != len(refs) or None in refs:
                problem(pw, f"refIds missing or repeated: {refs}")
            for t in targets:
                e = t.get("expr", "")
                if not e.strip():
                    problem(pw, f"target {t.get('refId')} has no expr")
                    continue
                used_metrics += e
                for var in re.findall(r"\$\{?(\w+)", e):
                    if var not in variables and f"${var}" not in GRAFANA_VARS and f"${{{var}}}" not in GRAFANA_VARS:
                        problem(pw, f"uses ${var}, which is not a dashboard variable")
                sub = e
                for k, v in GRAFANA_VARS.items():
                    sub = sub.replace(k, v)
                sub = re.sub(r"\$\{?(\w+)\}?", "x", sub)
                exprs.append((f"{pw} target {t.get('refId')}", sub))
        note(f"{r}: {len([p for p in panels if p.get('type') != 'row'])} panels, {len(exprs)} queries (panel targets and variables)")
        for m in sorted(rust_metric_names()):
            if m not in used_metrics:
                print(f"warning: {r}: metric {m} (shared/src/metrics.rs) is on no panel")
    check_promql(exprs)


# ---- Kubernetes (rendered by kustomize) ---------------------------------------------------------

PROM_TRIGGER_KEYS = {
    "serverAddress", "query", "threshold", "activationThreshold", "namespace", "customHeaders",
    "ignoreNullValues", "queryParameters", "unsafeSsl", "timeout", "authModes", "metricName",
}


def labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def cmd_k8s(built: list[str]) -> None:
    from cloudcoil.models.keda.v1alpha1 import ScaledObject  # noqa: PLC0415 (only this command needs it)

    kinds, known = job_kinds(), known_env_vars()
    secret = load_yaml_all(COMPOSE / "k8s/secret.example.yaml")[0]
    secret_keys = set((secret.get("stringData") or {}) | (secret.get("data") or {}))
    for path in built:
        label = f"k8s[{Path(path).stem}]"
        docs = load_yaml_all(Path(path))
        by_kind: dict[str, dict[str, dict]] = {}
        for d in docs:
            by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
            if d["metadata"].get("namespace", "hopper") != "hopper" and d["kind"] != "Namespace":
                problem(f"{label} {d['kind']}/{d['metadata']['name']}", "not in namespace hopper")
        deployments = by_kind.get("Deployment", {})
        cms = by_kind.get("ConfigMap", {})
        exprs = []
        worker_queues: dict[str, set[str]] = {}
        for name, dep in deployments.items():
            where = f"{label} Deployment/{name}"
            spec = dep["spec"]
            tpl = spec["template"]
            tlabels = tpl["metadata"].get("labels", {})
            if not labels_match(spec["selector"].get("matchLabels", {}), tlabels):
                problem(where, "selector does not match the pod template's labels")
            pod = tpl["spec"]
            psc = pod.get("securityContext") or {}
            if not psc.get("runAsNonRoot") or psc.get("runAsUser") != 10001:
                problem(where, "pods must run as non-root uid 10001 (the images' user)")
            for c in pod["containers"]:
                cw = f"{where} container {c['name']}"
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                from_cm = {}
                for ef in c.get("envFrom", []):
                    if "configMapRef" in ef:
                        cm = cms.get(ef["configMapRef"]["name"])
                        if cm is None:
                            problem(cw, f"envFrom ConfigMap {ef['configMapRef']['name']} is not in the build")
                        else:
                            from_cm |= cm.get("data", {})
                    if "secretRef" in ef and ef["secretRef"]["name"] != secret["metadata"]["name"]:
                        problem(cw, f"envFrom Secret {ef['secretRef']['name']} is not the one secret.example.yaml defines")
                all_env = from_cm | {k: "(secret)" for k in secret_keys} | env
                check_env_names(cw, list(from_cm) + list(env), known)
                for need in ("REDIS_URL", "DATABASE_URL"):
                    if need not in all_env:
                        problem(cw, f"{need} is not set (ConfigMap, Secret or env)")
                ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    pr = c.get(probe)
                    if not pr:
                        problem(cw, f"no {probe}")
                        continue
                    hg = pr.get("httpGet") or {}
                    port = hg.get("port")
                    if isinstance(port, str) and port not in ports or isinstance(port, int) and port not in ports.values():
                        problem(cw, f"{probe} port {port} is not a container port")
                    want = "/health/ready" if probe == "readinessProbe" else "/health/live"
                    if hg.get("path") != want:
                        problem(cw, f"{probe} should GET {want}, not {hg.get('path')}")
                sc = c.get("securityContext") or {}
                if sc.get("allowPrivilegeEscalation") is not False or "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                    problem(cw, "container may escalate privileges or keeps capabilities")
                res = c.get("resources") or {}
                if not (res.get("requests") or {}).get("memory") or not (res.get("limits") or {}).get("memory"):
                    problem(cw, "no memory request and limit")
                image = c.get("image", "")
                if c["name"] == "worker":
                    qs, device = check_worker_args(cw, c.get("args") or [], kinds)
                    worker_queues[name] = qs
                    grace = int(all_env.get("HOPPER_SHUTDOWN_GRACE_MS", 30000))
                    tgps = pod.get("terminationGracePeriodSeconds", 30)
                    if tgps * 1000 < grace + 5000:
                        problem(where, f"terminationGracePeriodSeconds {tgps} is not at least HOPPER_SHUTDOWN_GRACE_MS + 5 s ({grace} ms): a draining worker would be SIGKILLed")
                    addr = all_env.get("HOPPER_WORKER_METRICS_ADDR", "")
                    if not addr or int(addr.rsplit(":", 1)[-1]) not in ports.values():
                        problem(cw, f"HOPPER_WORKER_METRICS_ADDR {addr!r} is not a container port")
                    gpu = "nvidia.com/gpu" in (res.get("limits") or {})
                    cuda_image = "worker-cuda" in image
                    if device.startswith("cuda") != gpu or gpu != cuda_image:
                        problem(cw, f"--device {device}, image {image} and nvidia.com/gpu limit ({gpu}) disagree")
                    ann = tpl["metadata"].get("annotations", {})
                    if ann.get("prometheus.io/port") != addr.rsplit(":", 1)[-1]:
                        problem(where, "prometheus.io/port annotation is not the metrics port")
                elif c["name"] == "api":
                    if "/api" not in image:
                        problem(cw, f"image {image} is not the api image")
        served = set().union(*worker_queues.values()) if worker_queues else set()
        if kinds - served:
            problem(label, f"no worker Deployment serves {', '.join(sorted(kinds - served))}")
        for kind in ("Service", "PodDisruptionBudget"):
            for name, obj in by_kind.get(kind, {}).items():
                sel = obj["spec"]["selector"]
                sel = sel.get("matchLabels", sel) if kind == "PodDisruptionBudget" else sel
                if not any(labels_match(sel, d["spec"]["template"]["metadata"].get("labels", {})) for d in deployments.values()):
                    problem(f"{label} {kind}/{name}", f"selector {sel} matches no Deployment's pods")
        for name in deployments:
            if not any(labels_match(p["spec"]["selector"].get("matchLabels", {}), deployments[name]["spec"]["template"]["metadata"]["labels"])
                       for p in by_kind.get("PodDisruptionBudget", {}).values()):
                problem(f"{label} Deployment/{name}", "no PodDisruptionBudget")
        scaled = by_kind.get("ScaledObject", {})
        for name, so in scaled.items():
            where = f"{label} ScaledObject/{name}"
            if so.get("apiVersion") != "keda.sh/v1alpha1":
                problem(where, f"apiVersion {so.get('apiVersion')} is not keda.sh/v1alpha1")
            try:
                model = ScaledObject.model_validate(so)
            except Exception as e:  # pydantic.ValidationError
                problem(where, "does not validate against the KEDA ScaledObject schema: " + " ".join(str(e).split())[:500])
                continue
            back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
            for p in diff_paths(so, back):
                problem(where, f"field {p} is not in the KEDA ScaledObject schema")
            spec = so["spec"]
            target = spec["scaleTargetRef"]["name"]
            if spec["scaleTargetRef"].get("kind", "Deployment") != "Deployment" or target not in deployments:
                problem(where, f"scaleTargetRef {target} is not a Deployment in the build")
            if not 0 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100):
                problem(where, "minReplicaCount > maxReplicaCount")
            qs = worker_queues.get(target, set())
            metrics_seen = set()
            for i, t in enumerate(spec.get("triggers", [])):
                tw = f"{where} trigger {t.get('name', i)}"
                if t.get("type") != "prometheus":
                    continue
                md = t.get("metadata", {})
                for k in sorted(set(md) - PROM_TRIGGER_KEYS):
                    problem(tw, f"unknown prometheus scaler setting {k}")
                for k in ("serverAddress", "query", "threshold"):
                    if not md.get(k):
                        problem(tw, f"prometheus trigger without {k}")
                for k in ("threshold", "activationThreshold"):
                    if k in md:
                        try:
                            float(md[k])
                        except ValueError:
                            problem(tw, f"{k} {md[k]!r} is not a number")
                q = md.get("query", "")
                exprs.append((tw, q))
                metrics_seen |= set(re.findall(r"hopper_queue_\w+", q))
                sel = set()
                for op, val in re.findall(r'queue\s*(=~|=)\s*"([^"]*)"', q):
                    sel |= set(val.split("|")) if op == "=~" else {val}
                if sel != qs:
                    problem(tw, f"query selects queues {sorted(sel)} but {target} serves {sorted(qs)}")
            for m in ("hopper_queue_pending", "hopper_queue_oldest_pending_seconds"):
                if m not in metrics_seen:
                    problem(where, f"no trigger on {m}")
        note(f"{label}: {len(docs)} objects, {len(scaled)} ScaledObjects checked against the KEDA models")
        for name in worker_queues:
            if not any(so["spec"]["scaleTargetRef"]["name"] == name for so in scaled.values()):
                problem(f"{label} Deployment/{name}", "no KEDA ScaledObject")
        check_promql(exprs)


def diff_paths(a, b, path="") -> list[str]:
    """Paths present in a but missing or different in b (fields the model dropped)."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k, v in a.items():
            if k not in b:
                out.append(f"{path}.{k}")
            else:
                out += diff_paths(v, b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            out += diff_paths(x, y, f"{path}[{i}]")
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    cmd, args = argv[0], argv[1:]
    {"files": lambda: cmd_files(), "dockerfiles": lambda: cmd_dockerfiles(),
     "compose": lambda: cmd_compose(args), "grafana": lambda: cmd_grafana(args[0]),
     "k8s": lambda: cmd_k8s(args)}[cmd]()
    for n in NOTES:
        print(f"note: {n}")
    for p in PROBLEMS:
        print(p)
    return 1 if PROBLEMS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
