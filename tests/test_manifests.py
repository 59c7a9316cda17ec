"""`nodetune manifests`: schema-valid Kubernetes objects, parseable docker and Slurm files,
pinned sets inside each GPU's NUMA node, and golden files for DGX H100, GB200 and the H200 VM."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nodetune.cli import cli, main
from nodetune.facts import cpulist
from nodetune.manifests import Options, render
from tests import placement_trees as trees

GOLDEN = Path(__file__).parent / "golden" / "manifests"
K8S_VERSIONS = ("1.30.0", "1.33.0")
TREES = ("dgx-h100", "gb200", "h200x2-vm", "hgx-multirail")
# Fields of KubeletConfiguration (kubelet.config.k8s.io/v1beta1, k8s.io/kubelet/config/v1beta1
# types.go) that nodetune writes; kubernetes-validate ships no schema for this config file.
KUBELET_FIELDS = {"apiVersion", "kind", "cpuManagerPolicy", "cpuManagerPolicyOptions",
                  "reservedSystemCPUs", "topologyManagerPolicy", "topologyManagerScope",
                  "topologyManagerPolicyOptions", "memoryManagerPolicy", "systemReserved",
                  "kubeReserved", "evictionHard", "reservedMemory"}


def source(request, name: str) -> tuple[Path, str | None]:
    if name == "h200x2-vm":
        return request.getfixturevalue("host_tree")("h200x2-vm-gather"), str(trees.H200_NVML)
    return trees.tree(request, name)


def generate(request, name: str, tmp_path: Path, *extra: str) -> dict[str, str]:
    root, nvml = source(request, name)
    out = tmp_path / name
    result = CliRunner().invoke(cli, ["manifests", *trees.cli_args(root, nvml), "-o", str(out),
                                      *extra])
    assert result.exit_code == 0, result.output
    return {p.name: p.read_text() for p in sorted(out.iterdir())}


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def mebibytes(quantity: str) -> int:
    assert quantity.endswith("Mi"), quantity
    return int(quantity[:-2])


@pytest.fixture(scope="module")
def outputs(request, tmp_path_factory):
    base = tmp_path_factory.mktemp("manifests")
    return {name: generate(request, name, base) for name in TREES}


@pytest.mark.parametrize("name", TREES)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_objects_validate_against_the_api_schemas(outputs, name, version):
    import kubernetes_validate

    objs = [o for f in ("pods.yaml", "nodetune-agent.yaml") for o in documents(outputs[name][f])]
    kinds = sorted(o["kind"] for o in objs)
    assert kinds.count("Pod") >= 2 and "DaemonSet" in kinds and "ClusterRoleBinding" in kinds
    for obj in objs:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("name", TREES)
def test_kubelet_config_holds_the_kubelet_s_own_rules(request, outputs, name):
    (config,) = documents(outputs[name]["kubelet-config.yaml"])
    facts = trees.facts(*source(request, name))
    numa_ids = {n["id"] for n in facts["numa"]["nodes"]}
    assert set(config) <= KUBELET_FIELDS
    assert config["cpuManagerPolicy"] == "static"
    assert config["topologyManagerPolicy"] in {"best-effort", "restricted", "single-numa-node"}
    assert config["topologyManagerScope"] == "pod"
    reserved = cpulist.parse(config["reservedSystemCPUs"])
    assert reserved and set(reserved) <= set(facts["cpu"]["online"])
    # memory manager: reservations only on existing nodes, summing to the node-level reserve
    assert config["memoryManagerPolicy"] == "Static"
    limits = {r["numaNode"]: mebibytes(r["limits"]["memory"]) for r in config["reservedMemory"]}
    with_memory = {n["id"] for n in facts["numa"]["nodes"] if n["memory_total_bytes"]}
    assert set(limits) == with_memory and with_memory <= numa_ids
    total = (mebibytes(config["systemReserved"]["memory"])
             + mebibytes(config["evictionHard"]["memory.available"]))
    assert sum(limits.values()) == total
    if len(numa_ids) > 8:
        assert config["topologyManagerPolicyOptions"] == {
            "max-allowable-numa-nodes": str(len(numa_ids))}
    else:
        assert "topologyManagerPolicyOptions" not in config


def test_topology_policy_follows_gpus_per_numa_node(outputs):
    policy = {n: documents(outputs[n]["kubelet-config.yaml"])[0]["topologyManagerPolicy"]
              for n in TREES}
    assert policy == {"dgx-h100": "restricted", "gb200": "restricted",
                      "h200x2-vm": "single-numa-node", "hgx-multirail": "restricted"}
    assert "cpu_manager_state" in outputs["dgx-h100"]["kubelet-config.yaml"]
    assert "memory_manager_state" in outputs["dgx-h100"]["kubelet-config.yaml"]


def test_dgx_pods_are_guaranteed_whole_core_and_fit_their_numa_node(request, outputs):
    facts = trees.facts(*source(request, "dgx-h100"))
    pods = {p["metadata"]["name"]: p for p in documents(outputs["dgx-h100"]["pods.yaml"])}
    assert set(pods) == {"nodetune-example-1gpu", "nodetune-example-4gpu", "nodetune-example-8gpu"}
    node_cpus = min(len(n["cpus"]) for n in facts["numa"]["nodes"])
    for pod in pods.values():
        (container,) = pod["spec"]["containers"]
        res = container["resources"]
        assert res["requests"] == res["limits"]
        cpus = int(res["limits"]["cpu"])
        assert cpus % facts["cpu"]["threads_per_core"] == 0
        assert res["limits"]["rdma/rdma_shared_device_a"] == "1"
        assert "IPC_LOCK" in container["securityContext"]["capabilities"]["add"]
    assert int(pods["nodetune-example-4gpu"]["spec"]["containers"][0]["resources"]["limits"]
               ["cpu"]) <= node_cpus - 4  # a NUMA node's worth fits beside the reserved cores


def _env(pod: dict) -> dict[str, str]:
    (container,) = pod["spec"]["containers"]
    return {e["name"]: e["value"] for e in container.get("env", [])}


@pytest.mark.parametrize("name", TREES)
def test_pods_and_gres_conf_name_every_rail_of_the_gpus(request, outputs, name):
    """Each pod's env lists the rails of every GPU (the device plugin picks which a pod
    gets), best path class first, each rail on the GPU's own PCIe switch where it shares
    one, and nothing but rails; gres.conf names each GPU's rails above its line."""
    facts = trees.facts(*source(request, name))
    plan = trees.plan(facts)
    switch_of = {d["address"]: d.get("switch") for d in facts["pci"]["devices"]}
    nic_pci = {d["name"]: d["pci_address"] for d in (facts.get("rdma") or {}).get("devices", [])}
    rank = {"PIX": 1, "PXB": 2, "PHB": 3, "NODE": 4, "SYS": 5}
    per_gpu = {g.index: list(zip(g.nics, g.nic_paths, strict=True)) for g in plan.gpus}
    for g in plan.gpus:
        for nic, path in per_gpu[g.index]:
            if path in ("PIX", "PXB"):
                assert switch_of[nic_pci[nic]] == switch_of[g.pci_address] is not None
    best: dict[str, int] = {}
    for rails in per_gpu.values():
        for nic, path in rails:
            best[nic] = min(best.get(nic, 9), rank[path])
    expected = sorted(best, key=lambda n: best[n])  # stable: GPU order within a class
    envs = [_env(p) for p in documents(outputs[name]["pods.yaml"])]
    assert len(envs) >= 2
    for env in envs:
        if not expected:
            assert env == {}
            continue
        assert env["NCCL_IB_HCA"] == "=" + ",".join(expected)
        assert env["UCX_NET_DEVICES"] == ",".join(f"{n}:1" for n in expected)
        assert "FI_PROVIDER" not in env
    comments = [line for line in outputs[name]["gres.conf"].splitlines()
                if line.startswith("# GPU ")]
    assert len(comments) == len(plan.gpus)
    for g in plan.gpus:
        (comment,) = [c for c in comments if c.startswith(f"# GPU {g.index} (")]
        if expected:
            assert comment.endswith("; rails " + ", ".join(f"{n} ({p})"
                                                           for n, p in per_gpu[g.index]))
        else:
            assert "rails" not in comment
    if name == "hgx-multirail":
        assert len(expected) == 16 and all(len(r) == 2 for r in per_gpu.values())
    if name == "dgx-h100":
        assert len(expected) == 8 and all(len(r) == 1 for r in per_gpu.values())
    if name == "gb200":  # the two BlueField-3 serve no GPU: not rails
        assert expected == ["mlx5_0", "mlx5_1", "mlx5_3", "mlx5_4"]
        assert len(plan.rdma_devices) == 6


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_efa_pods_set_libfabric_and_validate(request, version):
    import kubernetes_validate

    doc = trees.facts(*trees.tree(request, "hgx-multirail"))
    for d in doc["rdma"]["devices"]:  # the efa driver's names: rdmapBUSsSLOT
        d["name"] = "rdmap" + str(int(d["pci_address"].split(":")[1], 16)) + "s0"
    plan = trees.plan(doc)
    text = render("k8s-pod", plan, Options()).files["pods.yaml"]
    rails = [n for g in plan.gpus for n in g.nics]
    assert len(rails) == 16 and all(n.startswith("rdmap") for n in rails)
    for pod in documents(text):
        kubernetes_validate.validate(pod, version, strict=True)
        assert _env(pod) == {"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1",
                             "UCX_NET_DEVICES": ",".join(f"{n}:1" for n in rails)}


def test_daemonset_runs_the_agent_with_its_flags_on_gpu_nodes(outputs):
    objs = {o["kind"]: o for o in documents(outputs["dgx-h100"]["nodetune-agent.yaml"])}
    spec = objs["DaemonSet"]["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["args"] == ["agent", "--root", "/host", "--nvml", "live", "--listen",
                         "0.0.0.0:9402", "--interval", "300"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert all(mounts[p]["readOnly"] for p in ("/host/proc", "/host/sys", "/host/etc"))
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["ports"][0]["containerPort"] == 9402
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} \
        in c["env"]
    rules = {(tuple(r["resources"]), v) for r in objs["ClusterRole"]["rules"] for v in r["verbs"]}
    assert {(("nodes",), "get"), (("nodes",), "patch"), (("events",), "create")} <= rules
    assert c["resources"]["limits"] != c["resources"]["requests"]  # never Guaranteed
    assert any(t["key"] == "nodetune.io/unhealthy" for t in spec["tolerations"])


def test_daemonset_args_parse_with_the_agents_own_options(outputs):
    """The DaemonSet and the agent share their flags: the real command line parser takes them."""
    from nodetune.cli import cli

    ds = next(o for o in documents(outputs["dgx-h100"]["nodetune-agent.yaml"])
              if o["kind"] == "DaemonSet")
    args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    command = cli.get_command(None, args[0])  # type: ignore[arg-type]
    ctx = command.make_context(args[0], [*args[1:], "--taint-unhealthy"])
    assert ctx.params["root"] == "/host" and ctx.params["nvml"] == "live"
    assert ctx.params["listen"] == "0.0.0.0:9402" and ctx.params["interval"] == 300
    assert ctx.params["taint_unhealthy"]


def test_daemonset_passes_taint_unhealthy(request, tmp_path):
    files = generate(request, "h200x2-vm", tmp_path, "--target", "daemonset", "--taint-unhealthy",
                     "--interval", "60", "--image", "registry.example/nodetune:1")
    ds = next(o for o in documents(files["nodetune-agent.yaml"]) if o["kind"] == "DaemonSet")
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    assert c["args"][-3:] == ["--interval", "60", "--taint-unhealthy"]
    assert c["image"] == "registry.example/nodetune:1"


def docker_runs(text: str) -> list[dict[str, list[str]]]:
    """Each `docker run` line of docker-run.sh as {flag: [values]} plus "image"."""
    runs = []
    for line in text.splitlines():
        if not line.startswith("docker run"):
            continue
        argv = shlex.split(line)[2:]
        flags: dict[str, list[str]] = {}
        i = 0
        while argv[i].startswith("-"):
            if argv[i] in ("--rm", "-it"):
                flags[argv[i]] = []
                i += 1
                continue
            flags.setdefault(argv[i], []).append(argv[i + 1])
            i += 2
        flags["image"] = argv[i:]
        runs.append(flags)
    return runs


@pytest.mark.parametrize("name", TREES)
def test_docker_lines_and_compose_pin_each_group_to_one_numa_node(request, outputs, name):
    facts = trees.facts(*source(request, name))
    node_cpus = {n["id"]: set(n["cpus"]) for n in facts["numa"]["nodes"]}
    reserved = set(cpulist.parse(documents(outputs[name]["kubelet-config.yaml"])[0]
                                 ["reservedSystemCPUs"]))
    gpu_node = {g["index"]: g["numa_node"] for g in facts["gpus"]}
    runs = docker_runs(outputs[name]["docker-run.sh"])
    compose = yaml.safe_load(outputs[name]["compose.yaml"])["services"]
    assert len(runs) == len(compose) == len({n for n in gpu_node.values()})
    seen_gpus = []
    for run, service in zip(runs, compose.values(), strict=True):
        (gpus,) = run["--gpus"]
        assert gpus.startswith('"device=') and gpus.endswith('"')
        indices = [int(i) for i in gpus[len('"device='):-1].split(",")]
        seen_gpus += indices
        (mems,) = run["--cpuset-mems"]
        cpus = set(cpulist.parse(run["--cpuset-cpus"][0]))
        assert {gpu_node[i] for i in indices} == {int(mems)}
        assert cpus <= node_cpus[int(mems)] and not cpus & reserved
        assert run["--ulimit"][0] == "memlock=-1" and run["--shm-size"][0].endswith("g")
        assert set(cpulist.parse(service["cpuset"])) == cpus
        assert service["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == \
            [str(i) for i in indices]
        assert ("--device" in run) == bool((facts.get("rdma") or {}).get("devices"))
    assert sorted(seen_gpus) == sorted(gpu_node)


def gres_lines(text: str) -> list[dict[str, str]]:
    return [dict(tok.split("=", 1) for tok in line.split()) for line in text.splitlines()
            if line.startswith("NodeName=")]


@pytest.mark.parametrize("name", TREES)
def test_gres_conf_cores_are_the_gpu_numa_node_and_links_are_symmetric(request, outputs, name):
    doc = trees.facts(*source(request, name))
    plan = trees.plan(doc)
    by_logical = {core.logical_index: set(core.cpus) for core in plan.cores}
    node_cpus = {n["id"]: set(n["cpus"]) for n in doc["numa"]["nodes"]}
    lines = gres_lines(outputs[name]["gres.conf"])
    assert len(lines) == len(doc["gpus"])
    assert "AutoDetect=off" in outputs[name]["gres.conf"].splitlines()
    files = [line["File"] for line in lines]
    assert len(set(files)) == len(files) and all(f.startswith("/dev/nvidia") for f in files)
    for gpu, line in zip(sorted(doc["gpus"], key=lambda g: g["index"]), lines, strict=True):
        cpus = set().union(*(by_logical[c] for c in cpulist.parse(line["Cores"])))
        assert cpus <= node_cpus[gpu["numa_node"]]
        assert not cpus & set(plan.reserved_cpus)
    links = [[int(x) for x in line["Links"].split(",")] for line in lines if "Links" in line]
    assert len(links) == len(lines)
    for i, row in enumerate(links):
        assert row[i] == -1
        assert all(links[j][i] == row[j] for j in range(len(row)) if j != i)
    hints = outputs[name]["slurm-hints.conf"]
    assert "TaskPlugin=task/cgroup,task/affinity" in hints and "--gpu-bind=closest" in hints


SLURMD = shutil.which("slurmd") or shutil.which("slurmd", path="/usr/sbin:/sbin")


@pytest.mark.slow
@pytest.mark.skipif(SLURMD is None, reason="slurmd not installed (apt-get install slurmd)")
@pytest.mark.parametrize("name", TREES)
def test_real_slurmd_loads_gres_conf_and_the_node_line(request, outputs, name, tmp_path):
    """`slurmd -G` (print the GRES configuration and exit) of the host's Slurm reads the
    gres.conf with its rail comments and the slurm.conf node line, and checks each Cores=
    against the machine hwloc describes: a synthetic hwloc topology of this node's shape
    (packages x NUMA nodes x cores x threads), since the host is not the node."""
    plan = trees.plan(trees.facts(*source(request, name)))
    (node_line,) = [line for line in outputs[name]["slurm-hints.conf"].splitlines()
                    if line.startswith("NodeName=")]
    sockets = int(re.search(r"Sockets=(\d+)", node_line).group(1))
    numa_per_socket = len(plan.cpu_numa_nodes) // sockets
    shape = (f"pack:{sockets} numa:{numa_per_socket} "
             f"core:{len(plan.cores) // sockets // numa_per_socket} pu:{plan.threads_per_core}")
    devices = tmp_path / "dev"
    devices.mkdir()
    gres = outputs[name]["gres.conf"].replace("File=/dev/", f"File={devices}/")
    for minor, line in enumerate(gres_lines(gres)):
        path = Path(line["File"])
        if os.geteuid() == 0:  # slurmd wants a character device; a plain file draws an error
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(195, minor))
        else:
            path.touch()
    (tmp_path / "gres.conf").write_text(gres)
    (tmp_path / "slurm.conf").write_text(
        f"ClusterName=gres\nSlurmctldHost=localhost\nGresTypes=gpu\n"
        f"SelectType=select/cons_tres\n{node_line}\nPartitionName=all Nodes=ALL\n")
    node = node_line.split()[0].split("=", 1)[1]
    proc = subprocess.run([SLURMD, "-f", str(tmp_path / "slurm.conf"), "-N", node, "-G"],
                          env={**os.environ, "HWLOC_SYNTHETIC": shape}, capture_output=True,
                          text=True, timeout=30, check=False)
    errors = [line for line in proc.stderr.splitlines() if "error" in line
              and (os.geteuid() == 0 or "not a valid character or block device" not in line)]
    assert proc.returncode == 0 and not errors, proc.stderr
    loaded = re.findall(r"Gres Name=gpu Type=(\S+) .* File=(\S+) Cores=(\S+)", proc.stderr)
    assert loaded == [(line["Type"], line["File"], line["Cores"]) for line in gres_lines(gres)]


def test_gb200_output_carries_max_allowable_numa_nodes(outputs):
    assert "max-allowable-numa-nodes: '34'" in outputs["gb200"]["kubelet-config.yaml"]


def test_unknown_gpu_numa_node_pins_nothing_and_explains(request):
    doc = trees.facts(*source(request, "dgx-h100"))
    for g in doc["gpus"]:
        g["numa_node"], g["local_cpus"] = None, doc["cpu"]["online"]
    plan = trees.plan(doc)
    docker = render("docker", plan, Options()).files["docker-run.sh"]
    (run,) = docker_runs(docker)
    assert "--cpuset-cpus" not in run and "--cpuset-mems" not in run
    assert "NUMA node unknown" in docker
    gres = render("slurm", plan, Options()).files["gres.conf"]
    assert all("Cores" not in line for line in gres_lines(gres)) and "cannot tell" in gres
    kubelet = render("kubelet", plan, Options()).files["kubelet-config.yaml"]
    assert "report no NUMA node" in kubelet


@pytest.mark.parametrize("name", TREES)
def test_golden_files(request, outputs, update_golden, name):
    folder = GOLDEN / name
    if update_golden:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for filename, text in outputs[name].items():
            (folder / filename).write_text(text)
    expected = {p.name: p.read_text() for p in sorted(folder.iterdir())}
    assert outputs[name] == expected, "rerun with --update-golden after checking the diff"


def test_json_output_has_schema_first_and_every_target(request):
    root, nvml = source(request, "h200x2-vm")
    result = CliRunner().invoke(cli, ["manifests", *trees.cli_args(root, nvml), "--json"])
    doc = json.loads(result.output)
    assert next(iter(doc)) == "schema" and doc["schema"] == "nodetune.manifests/1"
    assert set(doc["targets"]) == {"kubelet", "k8s-pod", "daemonset", "docker", "slurm",
                                   "dra", "nccl-topo", "npd"}
    assert doc["placement"]["gpus"][0]["numa_node"] == 0


def test_gpu_target_on_a_node_without_gpus_is_a_one_line_error(host_tree, capsys):
    root = host_tree("8em64t-2s2ca2c")
    with pytest.raises(SystemExit) as exit_info:
        main(["manifests", "--root", str(root), "--nvml", "off", "--target", "docker"])
    assert exit_info.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no GPUs found" in err[0] and "fix:" in err[0]
    with pytest.raises(SystemExit) as exit_info:
        main(["manifests", "--root", str(root), "--nvml", "off", "--target", "kubelet"])
    assert exit_info.value.code == 0


def test_hugepage_pools_become_pod_hugepage_requests(request):
    import kubernetes_validate

    doc = trees.facts(*source(request, "dgx-h100"))
    for node in doc["numa"]["nodes"]:
        node["hugepages"] = {"2048": {"total": 4096, "free": 4096},
                             "1048576": {"total": 0, "free": 0}}
    files = render("k8s-pod", trees.plan(doc), Options()).files
    pods = {p["metadata"]["name"]: p for p in documents(files["pods.yaml"])}
    one = pods["nodetune-example-1gpu"]
    limits = one["spec"]["containers"][0]["resources"]["limits"]
    assert limits["hugepages-2Mi"] == "2048Mi"  # 4096 pages per node / 4 GPUs x 2 MiB
    assert "hugepages-1Gi" not in limits
    assert {"name": "hugepages-2mi", "emptyDir": {"medium": "HugePages-2Mi"}} in \
        one["spec"]["volumes"]
    for pod in pods.values():
        kubernetes_validate.validate(pod, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("name", TREES)
def test_kubelet_file_says_each_policy_option_its_version_and_dra(outputs, name):
    text = outputs[name]["kubelet-config.yaml"]
    (config,) = documents(text)
    comments = " ".join(ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#"))
    written = {**config.get("cpuManagerPolicyOptions", {}),
               **config.get("topologyManagerPolicyOptions", {})}
    for option in ("full-pcpus-only", "distribute-cpus-across-numa", "strict-cpu-reservation",
                   "prefer-closest-numa-nodes", "max-allowable-numa-nodes"):
        said = re.search(rf"option {option} \(([^)]*\d\.\d\d[^)]*)\): (written|not written)",
                         comments)
        assert said, option
        assert (said.group(2) == "written") == (option in written), option
    assert "does not align DRA-allocated" in comments
