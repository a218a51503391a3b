//! The Kubernetes manifests in `docs/kubernetes/`, checked offline: no cluster runs here, so
//! nothing proves they schedule or start. What is proven:
//! - every manifest is valid against the Kubernetes API schemas of 1.29 and 1.37 in strict mode
//!   (unknown fields refused), with kubernetes-validate (its wheel carries the schemas; `cargo
//!   xtask setup` installs it), run in a network namespace with no link at all;
//! - the DaemonSet grants exactly the capabilities of the systemd unit
//!   (`boot-user/debian/xdpboot.service`, which `tests/package.rs` proves sufficient) and
//!   nothing else, on the host network;
//! - the ConfigMap's config passes `xdpboot check`, and names the Secret's mount and the
//!   inventory Service the other manifests define.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use boot_tests::{
    KUBERNETES_VALIDATE_VERSION, NetNs, TempDir, command_output, kubernetes_validate_venv,
    run_command, xdpboot_binary,
};
use serde_json::Value;

/// Kubernetes versions the manifests are validated against: the oldest still common in
/// long-term distributions, and the newest kubernetes-validate knows.
const VERSIONS: &[&str] = &["1.29.0", "1.37.0"];
/// How long one validation may take (Python loading the schemas).
const VALIDATE_TIMEOUT: Duration = Duration::from_secs(120);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `*.yaml` in docs/kubernetes/, in name order.
fn manifests() -> Result<Vec<PathBuf>> {
    let dir = workspace().join("docs/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "no manifests in {}", dir.display());
    Ok(files)
}

/// A program of the virtualenv; fails, saying how to get it, when setup has not made it.
fn venv_program(name: &str) -> Result<PathBuf> {
    let program = kubernetes_validate_venv().join("bin").join(name);
    ensure!(
        program.is_file(),
        "{} is missing: these tests validate with kubernetes-validate {KUBERNETES_VALIDATE_VERSION} \
         in a virtualenv (cargo xtask setup installs it)",
        program.display()
    );
    Ok(program)
}

/// Every YAML document of `path` as JSON, parsed by the virtualenv's PyYAML (the YAML parser
/// kubernetes-validate itself uses).
fn documents(path: &Path) -> Result<Vec<Value>> {
    let json = run_command(
        Command::new(venv_program("python")?)
            .args([
                "-c",
                "import json, sys, yaml; \
                 print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            ])
            .arg(path),
        VALIDATE_TIMEOUT,
    )?;
    let docs: Vec<Value> = serde_json::from_str(&json)?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The one document of kind `kind` among the manifests.
fn resource(kind: &str) -> Result<Value> {
    let mut found = Vec::new();
    for file in manifests()? {
        found.extend(documents(&file)?.into_iter().filter(|d| d["kind"] == kind));
    }
    ensure!(
        found.len() == 1,
        "{} {kind} manifests, expected one",
        found.len()
    );
    Ok(found.remove(0))
}

/// `kubernetes-validate --strict -k VERSION FILES…` inside `ns`: its status and output.
fn validate(ns: &NetNs, version: &str, files: &[PathBuf]) -> Result<(bool, String)> {
    let output = command_output(
        Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(venv_program("kubernetes-validate")?)
            .args(["--strict", "--kubernetes-version", version])
            .args(files),
        VALIDATE_TIMEOUT,
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), text))
}

#[test]
fn the_manifests_are_valid_kubernetes_objects_offline_in_strict_mode() -> Result<()> {
    // A namespace with nothing but its loopback: a validator that fetched schemas would fail.
    let offline = NetNs::new("offline")?;
    let files = manifests()?;
    for version in VERSIONS {
        let (ok, text) = validate(&offline, version, &files)?;
        ensure!(
            ok,
            "kubernetes-validate {version} refused the manifests:\n{text}"
        );
        let minor = version.rsplit_once('.').map_or(*version, |(mm, _)| mm);
        for file in &files {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("?");
            ensure!(
                text.lines().any(|l| l.contains(&format!("{name} passed"))
                    && l.ends_with(&format!("against version {minor}"))),
                "no pass for {name} against {version}:\n{text}"
            );
        }
        println!("{text}");
    }

    // The check has teeth: a misspelt field is refused in strict mode.
    let scratch = TempDir::new("k8s")?;
    let daemonset = std::fs::read_to_string(workspace().join("docs/kubernetes/daemonset.yaml"))?;
    ensure!(daemonset.contains("hostNetwork: true"));
    let broken = scratch.join("daemonset.yaml");
    std::fs::write(
        &broken,
        daemonset.replace("hostNetwork: true", "hostNetwrok: true"),
    )?;
    let (ok, text) = validate(&offline, VERSIONS[VERSIONS.len() - 1], &[broken])?;
    ensure!(
        !ok && text.contains("hostNetwrok"),
        "a misspelt field passed strict validation:\n{text}"
    );
    Ok(())
}

/// The capabilities a systemd unit line lists (`Key=CAP_A CAP_B`), without `CAP_`.
fn unit_capabilities(unit: &str, key: &str) -> Result<BTreeSet<String>> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .with_context(|| format!("the unit has no {key}="))?;
    Ok(line
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect())
}

fn strings(value: &Value) -> Result<BTreeSet<String>> {
    value
        .as_array()
        .context("not a list")?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).context("not a string"))
        .collect()
}

#[test]
fn the_daemonset_adds_exactly_the_capabilities_of_the_systemd_unit() -> Result<()> {
    let unit = std::fs::read_to_string(workspace().join("boot-user/debian/xdpboot.service"))?;
    let ambient = unit_capabilities(&unit, "AmbientCapabilities")?;
    ensure!(ambient == unit_capabilities(&unit, "CapabilityBoundingSet")?);
    let daemonset = resource("DaemonSet")?;
    let pod = &daemonset["spec"]["template"]["spec"];
    ensure!(
        pod["hostNetwork"] == true,
        "the pods must use the host network"
    );
    let containers = pod["containers"].as_array().context("no containers")?;
    ensure!(containers.len() == 1, "one container: xdpboot");
    let security = &containers[0]["securityContext"];
    let added = strings(&security["capabilities"]["add"])?;
    ensure!(
        added == ambient,
        "the DaemonSet adds {added:?}; the systemd unit has {ambient:?}"
    );
    ensure!(
        strings(&security["capabilities"]["drop"])? == BTreeSet::from(["ALL".to_owned()]),
        "every other capability is dropped"
    );
    ensure!(security["allowPrivilegeEscalation"] == false);
    ensure!(security["privileged"].is_null() || security["privileged"] == false);
    Ok(())
}

#[test]
fn the_configmaps_config_passes_xdpboot_check_and_names_the_other_manifests() -> Result<()> {
    let config = resource("ConfigMap")?["data"]["xdpboot.toml"]
        .as_str()
        .context("the ConfigMap has no xdpboot.toml")?
        .to_owned();
    let dir = TempDir::new("k8s")?;
    let path = dir.join("xdpboot.toml");
    std::fs::write(&path, &config)?;
    let out = run_command(
        Command::new(xdpboot_binary())
            .args(["check", "--config"])
            .arg(&path)
            .env("RUST_LOG", "error"),
        VALIDATE_TIMEOUT,
    )
    .context("xdpboot check refused the ConfigMap's config")?;
    ensure!(out.contains(": ok"), "{out}");

    // The URL secret where the DaemonSet mounts the Secret.
    let daemonset = resource("DaemonSet")?;
    let pod = &daemonset["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .context("no volume mounts")?
        .iter()
        .find(|m| m["name"] == "url-secret")
        .and_then(|m| m["mountPath"].as_str())
        .context("the URL secret is not mounted")?
        .to_owned();
    ensure!(
        config.contains(&format!("secret_file = \"{mount}/url-secret\"")),
        "the config's secret_file is not in the Secret's mount {mount}:\n{config}"
    );
    let config_map = pod["volumes"]
        .as_array()
        .context("no volumes")?
        .iter()
        .find(|v| v["name"] == "config")
        .and_then(|v| v["configMap"]["name"].as_str())
        .context("the config volume is not a ConfigMap")?
        .to_owned();
    ensure!(config_map == resource("ConfigMap")?["metadata"]["name"]);

    // The inventory URL names the Service, on its port.
    let service = resource("Service")?;
    let url = format!(
        "http://{}.{}.svc:{}/",
        service["metadata"]["name"].as_str().context("name")?,
        service["metadata"]["namespace"]
            .as_str()
            .context("namespace")?,
        service["spec"]["ports"][0]["port"]
    );
    if !config.contains(&format!("url = \"{url}\"")) {
        bail!("the config's [api] url is not the inventory Service's {url}:\n{config}");
    }
    Ok(())
}
