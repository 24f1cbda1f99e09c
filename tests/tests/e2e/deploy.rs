//! The deployment files a person runs without reading the code: docker-compose.yml's structure
//! (restart policies, healthchecks, start order), every environment variable it sets is one
//! the binary it starts actually reads (from the binary's own `--help`), every binary it runs
//! is in the image, and the build context leaves `target/` out. (No Docker engine on the
//! development machines: this is what can be checked without one.)

use std::collections::BTreeMap;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The compose file's services: name → their lines (the file is written in flow style, one
/// key per line, so this reading is exact for it).
fn services(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut inside = false;
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("services:") {
            inside = true;
            continue;
        }
        if inside && !line.starts_with(' ') && !line.is_empty() && !line.starts_with('#') {
            inside = false;
        }
        if !inside {
            continue;
        }
        if let Some(name) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) {
            let name = name.trim_end_matches(':').to_string();
            out.insert(name.clone(), Vec::new());
            current = Some(name);
        } else if let Some(c) = &current {
            out.get_mut(c).unwrap().push(line.trim().to_string());
        }
    }
    out
}

fn value<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key}:")).map(str::trim))
}

/// `["a", "b"]` → [a, b].
fn list(v: &str) -> Vec<String> {
    v.trim_start_matches('[')
        .split(']')
        .next()
        .unwrap_or("")
        .split(',')
        .map(|x| x.trim().trim_matches('"').to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

/// `{ K: V, K2: "V2" }` → keys.
fn map_keys(v: &str) -> Vec<String> {
    v.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(", ")
        .filter_map(|kv| kv.split_once(':').map(|(k, _)| k.trim().to_string()))
        .filter(|k| !k.is_empty())
        .collect()
}

fn help_of(args: &[&str]) -> String {
    let out = std::process::Command::new(huiqi_e2e::procs::binary(args[0]))
        .args(&args[1..])
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_compose_file_is_complete_and_sets_only_variables_the_binaries_read() {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    let anchor_restart =
        text.contains("x-service: &service") && text.contains("restart: unless-stopped");
    let services = services(&text);
    for name in [
        "nats-1",
        "nats-2",
        "nats-3",
        "setup",
        "providers",
        "intake",
        "verification",
        "award",
        "payout",
    ] {
        assert!(services.contains_key(name), "compose has no {name}");
    }
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    for (name, lines) in &services {
        let uses_anchor = lines.iter().any(|l| l == "<<: *service");
        assert!(
            value(lines, "restart").is_some() || (uses_anchor && anchor_restart),
            "{name}: no restart policy"
        );
        if ["intake", "verification", "award", "payout"].contains(&name.as_str())
            || name.starts_with("nats-")
        {
            assert!(
                value(lines, "healthcheck").is_some(),
                "{name}: no healthcheck"
            );
        }
        if name.starts_with("nats-") {
            let cmd = list(value(lines, "command").unwrap());
            assert!(
                cmd.contains(&"-m".to_string()),
                "the healthcheck needs the monitor port"
            );
            // A node of the cluster: the shipped cluster configuration, the users' keys and the
            // route secrets, and its own name, which the routes of `huiqi keys generate` dial.
            assert!(cmd.contains(&"/etc/nats/nats-cluster.conf".to_string()));
            assert!(value(lines, "volumes")
                .unwrap()
                .contains("./deploy/nats-cluster.conf:/etc/nats/nats-cluster.conf:ro"));
            assert_eq!(
                list(value(lines, "env_file").unwrap()),
                ["keys/nats/users.env", "keys/nats/cluster.env"]
            );
            assert_eq!(
                value(lines, "environment").unwrap(),
                format!("{{ HUIQI_NATS_SERVER_NAME: {name} }}")
            );
            assert!(huiqi_bus::access::cluster_env().contains(&format!("@{name}:6222\n")));
            assert!(
                value(lines, "image").unwrap().contains("alpine"),
                "wget for the healthcheck"
            );
            continue;
        }
        let env = value(lines, "environment").expect("environment");
        if name != "providers" || env.contains("NATS_URL") {
            assert!(
                env.contains(
                    "NATS_URL: \"nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222\""
                ),
                "{name}: NATS_URL lists every node"
            );
        }
        if name == "setup" {
            assert!(
                env.contains("HUIQI_STREAM_REPLICAS: \"3\""),
                "the stream at R3"
            );
        }
        let command = list(value(lines, "command").expect("a command"));
        let binary = command[0].as_str();
        assert!(
            dockerfile.contains(&format!("release/{binary}")),
            "{name}: the image has no {binary}"
        );
        let mut args: Vec<&str> = command.iter().map(String::as_str).collect();
        args.truncate(2);
        let help = help_of(if binary == "huiqi" { &args } else { &args[..1] });
        for key in map_keys(value(lines, "environment").expect("environment")) {
            assert!(
                help.contains(&format!("[env: {key}")),
                "{name}: {binary} does not read {key}"
            );
        }
        if let Some(check) = value(lines, "healthcheck") {
            let test = list(check.split("test:").nth(1).unwrap().trim());
            assert_eq!(test[0], "CMD");
            let at = test
                .iter()
                .position(|a| a == "huiqi")
                .expect("huiqi health");
            let health_help = help_of(&["huiqi", "health"]);
            for kv in &test[2..at] {
                let key = kv.split('=').next().unwrap();
                assert!(
                    health_help.contains(&format!("[env: {key}")),
                    "{name}: healthcheck sets {key}"
                );
            }
            assert_eq!(test[at + 1], "health");
            assert_eq!(test[at + 3], name.as_str(), "{name} checks its own health");
        }
        if uses_anchor {
            assert!(
                text.contains(
                    "depends_on: { setup: { condition: service_completed_successfully } }"
                ),
                "services start after setup"
            );
        }
    }
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "target/ is in the build context"
    );
    assert!(
        ignore.lines().any(|l| l.contains(".seed")),
        "keys must not enter the image"
    );
}
