//! The deployment manifests under `deploy/kubernetes`, checked against the Kubernetes API's
//! own schemas with `kubernetes-validate` (PyPI), which ships them: no cluster is needed.
//!
//! The tool comes from `CACHELET_KUBERNETES_VALIDATE`, which `scripts/test` sets after
//! installing it into `.cache/venv`. Without it these tests fail; they never skip.
//!
//! The tool validates only the kinds it has schemas for. A file of any other kind (a Knative
//! Service, a Kustomization) gets a warning and exit code 0, the same as a valid one. So a
//! run counts here only when the tool reports every resource of the file as `passed`; the
//! Knative Service is checked through the pod template it embeds, as a core `PodTemplate`;
//! and the Kustomization is checked against the files it lists. Negative controls show that
//! a schema fault in a copy of a manifest is caught, on both paths.
//!
//! Beyond the schemas, plain string checks (the workspace has no YAML parser) hold the wiring
//! that the schemas cannot see: the sidecar discovers members through the headless Service,
//! which the RBAC lets it watch.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The variable that names the `kubernetes-validate` executable.
const VALIDATOR_ENV: &str = "CACHELET_KUBERNETES_VALIDATE";

/// The Kubernetes release whose schemas the manifests are checked against: the oldest one
/// they are meant for, so that they use no field a newer release added.
const KUBERNETES_VERSION: &str = "1.30.0";

/// Knative's own fields of a revision's spec, beside the pod spec's: a `PodTemplate` has no
/// such fields, so they are left out of the template checked in its place.
const KNATIVE_REVISION_FIELDS: [&str; 4] = [
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
];

/// The `kubernetes-validate` executable, or a panic that says how to get it.
fn validator() -> PathBuf {
    let Some(path) = std::env::var_os(VALIDATOR_ENV).filter(|p| !p.is_empty()) else {
        panic!(
            "{VALIDATOR_ENV} is not set: it must name the kubernetes-validate executable \
             (pip install kubernetes-validate; scripts/test installs it into .cache/venv and \
             sets {VALIDATOR_ENV})"
        );
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "{VALIDATOR_ENV}={} does not exist (scripts/test installs kubernetes-validate into \
         .cache/venv)",
        path.display()
    );
    path
}

/// `deploy/kubernetes` in this repository.
fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// A manifest's text, by its path under `deploy/kubernetes`.
fn manifest(name: &str) -> String {
    let path = manifests_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.yaml` and `.yml` file under `dir`, at any depth, in a stable order.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// What one run of the tool on one file said.
struct Run {
    /// Whether it exited with status 0.
    success: bool,
    /// Its standard output and standard error.
    output: String,
}

/// Runs the tool, strictly (unknown fields are errors), on `file`.
fn run_validator(file: &Path) -> Run {
    let out = Command::new(validator())
        .arg("--strict")
        .args(["--kubernetes-version", KUBERNETES_VERSION])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running {VALIDATOR_ENV}: {e}"));
    Run {
        success: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The number of resources in a manifest: each document has one top-level `kind`.
fn resource_count(text: &str) -> usize {
    text.lines()
        .filter(|line| line.starts_with("kind:"))
        .count()
}

/// Checks `file` against the schemas. It is valid only when the tool exits with 0, reports
/// each of its resources as passed, and says nothing else: a kind it has no schema for gets a
/// warning and exit code 0 too.
fn validate(file: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let expected = resource_count(&text);
    let run = run_validator(file);
    let (passed, other): (Vec<&str>, Vec<&str>) = run
        .output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .partition(|line| line.starts_with("INFO ") && line.contains(" passed for resource "));
    if run.success && expected > 0 && passed.len() == expected && other.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: {} of {expected} resources passed (exit success: {}):\n{}",
            file.display(),
            passed.len(),
            run.success,
            run.output
        ))
    }
}

/// A Knative Service's revision template as a core `v1` `PodTemplate`, for which the tool has
/// a schema: a revision's spec is a pod spec, less some fields and plus Knative's own
/// ([`KNATIVE_REVISION_FIELDS`], left out here). The Service's `spec` holds only `template`
/// (no `traffic`), as the last top-level key, so the template moves up one level.
fn knative_as_pod_template(text: &str) -> String {
    let mut out = String::new();
    let mut in_spec = false;
    for line in text.lines() {
        let line = if in_spec {
            let Some(unindented) = line.strip_prefix("  ") else {
                assert!(
                    line.trim().is_empty() || line.starts_with('#'),
                    "a top-level key after the Knative Service's spec: {line:?}"
                );
                out.push_str(line);
                out.push('\n');
                continue;
            };
            let knative_only = KNATIVE_REVISION_FIELDS
                .iter()
                .any(|field| unindented.starts_with(&format!("    {field}:")));
            if knative_only {
                continue;
            }
            unindented
        } else {
            match line {
                "apiVersion: serving.knative.dev/v1" => "apiVersion: v1",
                "kind: Service" => "kind: PodTemplate",
                "spec:" => {
                    in_spec = true;
                    continue;
                }
                other => other,
            }
        };
        out.push_str(line);
        out.push('\n');
    }
    assert!(in_spec, "the Knative Service has no top-level spec");
    out
}

/// Checks a Knative Service's pod template against the core schemas (see
/// [`knative_as_pod_template`]), through a copy in `dir`.
fn validate_knative(text: &str, dir: &Path) -> Result<(), String> {
    assert!(
        text.contains("apiVersion: serving.knative.dev/v1\n") && text.contains("kind: Service\n"),
        "not a Knative Service"
    );
    let template = dir.join("knative-pod-template.yaml");
    std::fs::write(&template, knative_as_pod_template(text)).unwrap();
    validate(&template)
}

/// Whether a manifest is a Knative resource, which the tool has no schema for.
fn is_knative(text: &str) -> bool {
    text.lines()
        .any(|line| line.starts_with("apiVersion: serving.knative.dev/"))
}

/// Whether a manifest is a Kustomization, which is kustomize's input, not an API resource.
fn is_kustomization(text: &str) -> bool {
    text.lines()
        .any(|line| line.starts_with("apiVersion: kustomize.config.k8s.io/"))
}

/// `text` with `from` replaced by `to` once, failing if `from` is not there: a negative
/// control must really inject its fault.
fn inject(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the control's anchor {from:?} is gone");
    text.replacen(from, to, 1)
}

/// The lines of the container named `name` in a manifest's pod spec: from its `- name:` line
/// to the next container or the end of the list.
fn container<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("- name: {name}");
    let mut lines = text.lines().skip_while(|line| line.trim() != header);
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no container {name}"));
    let indent = first.len() - first.trim_start().len();
    let mut block = vec![first];
    block.extend(lines.take_while(|line| {
        let own = line.len() - line.trim_start().len();
        line.trim().is_empty() || own > indent
    }));
    block
}

/// The values of every `key: value` line in `lines`, at any depth, unquoted.
fn values<'a>(lines: impl IntoIterator<Item = &'a str>, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}:");
    lines
        .into_iter()
        .filter_map(|line| line.trim().trim_start_matches("- ").strip_prefix(&prefix))
        .map(|value| value.trim().trim_matches('"'))
        .collect()
}

/// The sidecar's arguments, as given (`--flag=value`).
fn sidecar_args(text: &str) -> Vec<String> {
    container(text, "cachelet")
        .into_iter()
        .skip_while(|line| line.trim() != "args:")
        .skip(1)
        .take_while(|line| {
            line.trim_start().starts_with("- ") || line.trim_start().starts_with('#')
        })
        .filter_map(|line| line.trim().strip_prefix("- "))
        .map(str::to_owned)
        .collect()
}

/// The value of `--flag=value` among `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|arg| arg.strip_prefix(&format!("--{name}=")))
}

/// Every manifest passes strict validation against the Kubernetes 1.30 schemas: the plain
/// ones directly, the Knative Service through its pod template. Only the Kustomization is
/// left to [`kustomization_lists_every_plain_manifest`].
#[test]
fn every_manifest_passes_strict_schema_validation() {
    let dir = manifests_dir();
    let files = yaml_files(&dir);
    let names: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&dir).unwrap().display().to_string())
        .collect();
    for expected in [
        "deployment.yaml",
        "knative/service.yaml",
        "kustomization.yaml",
        "rbac.yaml",
        "secret.example.yaml",
        "service.yaml",
        "serviceaccount.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} is missing: {names:?}"
        );
    }
    let scratch = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (file, name) in files.iter().zip(&names) {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.starts_with('#'),
            "{name} does not open with a comment saying what it is"
        );
        if is_kustomization(&text) {
            continue;
        }
        let result = if is_knative(&text) {
            validate_knative(&text, scratch.path())
        } else {
            validate(file)
        };
        if let Err(e) = result {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Negative control: a copy of the Deployment with a field that containers do not have is
/// rejected, which shows that validation is strict.
#[test]
fn unknown_container_field_fails_validation() {
    let text = inject(
        &manifest("deployment.yaml"),
        "        - name: function\n",
        "        - name: function\n          cacheSize: 1GiB\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("deployment.yaml");
    std::fs::write(&copy, text).unwrap();
    let err = validate(&copy).expect_err("an unknown container field passed");
    assert!(err.contains("cacheSize"), "{err}");
}

/// Negative control: a copy of the Deployment whose replica count is a string is rejected.
#[test]
fn wrong_type_fails_validation() {
    let text = inject(
        &manifest("deployment.yaml"),
        "\n  replicas: 3\n",
        "\n  replicas: \"three\"\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("deployment.yaml");
    std::fs::write(&copy, text).unwrap();
    let err = validate(&copy).expect_err("a string replica count passed");
    assert!(err.contains("replicas"), "{err}");
}

/// Negative control for the Knative path: a copy of the Knative Service with an unknown field
/// in the sidecar is rejected through its pod template.
#[test]
fn fault_in_knative_template_fails_validation() {
    let text = inject(
        &manifest("knative/service.yaml"),
        "        - name: cachelet\n",
        "        - name: cachelet\n          cacheSize: 1GiB\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let err = validate_knative(&text, dir.path()).expect_err("an unknown sidecar field passed");
    assert!(err.contains("cacheSize"), "{err}");
}

/// Negative control for the pass criterion: the tool exits with 0 on the Knative Service
/// itself, a kind it has no schema for, and [`validate`] still does not count that as valid.
#[test]
fn kind_without_schema_is_not_taken_as_valid() {
    let file = manifests_dir().join("knative/service.yaml");
    let run = run_validator(&file);
    assert!(
        run.success,
        "the tool now fails on a kind it has no schema for:\n{}",
        run.output
    );
    let err = validate(&file).expect_err("a kind without a schema passed");
    assert!(err.contains("0 of 1 resources passed"), "{err}");
}

/// The Kustomization, which no schema covers, lists exactly the plain manifests: every file
/// at the top of `deploy/kubernetes` except itself and the examples, each of which exists.
#[test]
fn kustomization_lists_every_plain_manifest() {
    let dir = manifests_dir();
    let text = manifest("kustomization.yaml");
    let mut listed: Vec<&str> = text
        .lines()
        .skip_while(|line| *line != "resources:")
        .skip(1)
        .take_while(|line| line.starts_with("  - ") || line.starts_with('#'))
        .filter_map(|line| line.strip_prefix("  - "))
        .collect();
    listed.sort_unstable();
    let mut plain: Vec<String> = yaml_files(&dir)
        .iter()
        .filter(|f| f.parent() == Some(dir.as_path()))
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != "kustomization.yaml" && !name.ends_with(".example.yaml"))
        .collect();
    plain.sort_unstable();
    assert_eq!(listed, plain);
}

/// The sidecar, in both variants, finds its members through the headless Service's
/// EndpointSlices, advertises its pod's IP on the port the Service targets, runs with
/// credentials (a non-loopback node refuses to start without them), and gets to finish its
/// drain before the kubelet kills it.
#[test]
fn sidecar_discovers_members_through_the_headless_service() {
    let service = manifest("service.yaml");
    assert!(service.contains("\n  clusterIP: None\n"), "{service}");
    assert!(
        service.contains("\n  publishNotReadyAddresses: false\n"),
        "{service}"
    );
    let service_name = values(service.lines(), "name")[0];
    assert_eq!(values(service.lines(), "targetPort"), ["7070"]);

    for file in ["deployment.yaml", "knative/service.yaml"] {
        let text = manifest(file);
        let args = sidecar_args(&text);
        let discovery = flag(&args, "discovery").unwrap_or_else(|| panic!("{file}: {args:?}"));
        assert_eq!(
            discovery,
            format!("kubernetes:$(POD_NAMESPACE)/{service_name}"),
            "{file}"
        );
        assert_eq!(flag(&args, "advertise"), Some("$(POD_IP):7070"), "{file}");
        assert_eq!(flag(&args, "listen"), Some("0.0.0.0:7070"), "{file}");
        assert!(flag(&args, "auth").is_some(), "{file}: {args:?}");
        assert!(flag(&args, "peer-token-file").is_some(), "{file}: {args:?}");
        assert!(!args.iter().any(|a| a == "--insecure"), "{file}: {args:?}");
        let sidecar = container(&text, "cachelet");
        let fields = values(sidecar.iter().copied(), "fieldPath");
        assert!(fields.contains(&"status.podIP"), "{file}: {fields:?}");
        assert!(fields.contains(&"metadata.namespace"), "{file}: {fields:?}");
        assert_eq!(
            values(text.lines(), "serviceAccountName"),
            ["cachelet"],
            "{file}"
        );
    }

    let deployment = manifest("deployment.yaml");
    let args = sidecar_args(&deployment);
    let drain_ms: u64 = flag(&args, "drain-timeout-ms").unwrap().parse().unwrap();
    let grace_s: u64 = values(deployment.lines(), "terminationGracePeriodSeconds")[0]
        .parse()
        .unwrap();
    assert!(
        grace_s * 1000 > drain_ms,
        "grace {grace_s} s, drain {drain_ms} ms"
    );
}

/// The Knative variant keeps to what Knative accepts by default: one container declares
/// ports (the one requests go to), and neither a grace period nor sidecar probes are set.
#[test]
fn knative_variant_keeps_to_what_knative_accepts() {
    let text = manifest("knative/service.yaml");
    assert_eq!(values(text.lines(), "ports").len(), 1, "{text}");
    assert!(
        container(&text, "function")
            .iter()
            .any(|l| l.trim() == "ports:")
    );
    assert!(values(text.lines(), "terminationGracePeriodSeconds").is_empty());
    let sidecar = container(&text, "cachelet");
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        assert!(
            values(sidecar.iter().copied(), probe).is_empty(),
            "{sidecar:?}"
        );
    }
}

/// The RBAC lets the pods' ServiceAccount get, list and watch EndpointSlices in their own
/// namespace (a Role, not a ClusterRole), and nothing more.
#[test]
fn rbac_grants_watch_on_endpointslices() {
    let rbac = manifest("rbac.yaml");
    let documents: Vec<&str> = rbac.split("\n---\n").collect();
    let role = documents
        .iter()
        .find(|d| d.contains("\nkind: Role\n"))
        .expect("no Role");
    let binding = documents
        .iter()
        .find(|d| d.contains("\nkind: RoleBinding\n"))
        .expect("no RoleBinding");
    assert!(!rbac.contains("ClusterRole"), "{rbac}");

    assert_eq!(
        values(role.lines(), "apiGroups"),
        [r#"["discovery.k8s.io"]"#]
    );
    assert_eq!(values(role.lines(), "resources"), [r#"["endpointslices"]"#]);
    let verbs = values(role.lines(), "verbs");
    assert_eq!(verbs.len(), 1, "one rule: {verbs:?}");
    let mut verbs: Vec<&str> = verbs[0]
        .trim_matches(['[', ']'])
        .split(',')
        .map(|v| v.trim().trim_matches('"'))
        .collect();
    verbs.sort_unstable();
    assert_eq!(verbs, ["get", "list", "watch"]);

    let role_name = values(role.lines(), "name")[0];
    let bound: Vec<&str> = values(binding.lines(), "name");
    // metadata.name, roleRef.name, then the subject's name.
    assert_eq!(bound.len(), 3, "{bound:?}");
    assert_eq!(bound[1], role_name);
    assert!(binding.contains("  - kind: ServiceAccount\n"), "{binding}");
    assert_eq!(bound[2], "cachelet");
    let account = manifest("serviceaccount.yaml");
    assert_eq!(values(account.lines(), "name")[0], "cachelet");
}
