//! `deploy/`: the Kubernetes manifests validate offline against the Kubernetes API schemas
//! (`kubernetes-validate`, which `.ci/run` installs), as written and as kustomize renders them
//! when `kubectl` is present; the router config is the one the farm test runs.

use std::process::Command;

use crate::harness::{require_tool, workspace_root};

/// The oldest Kubernetes the manifests target (`hostUsers` of the native profile is beta and on
/// by default from 1.33; the schema knows it from 1.25).
const KUBERNETES: &str = "1.32.0";

fn validate(files: &[std::path::PathBuf]) -> String {
    require_tool("kubernetes-validate");
    let out = Command::new("kubernetes-validate")
        .args(["-k", KUBERNETES, "--strict"])
        .args(files)
        .output()
        .expect("spawn kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
    text
}

#[test]
fn the_kubernetes_manifests_validate_against_the_api_schemas() {
    let deploy = workspace_root().join("deploy/k8s");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(deploy.join("base"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    files.push(deploy.join("jobs/job.yaml"));
    files.sort();
    let text = validate(&files);
    for kind in [
        "statefulset/kiln",
        "service/kiln",
        "deployment/kiln-router",
        "deployment/registry",
        "deployment/registry-mirror",
        "job/kiln-build-app",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind}: {text}"
        );
    }
    // As kustomize renders them (the native profile exists only as a patch), where kubectl is.
    let have_kubectl = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have_kubectl {
        let dir = tempfile::tempdir().unwrap();
        for profile in ["base", "native"] {
            let out = Command::new("kubectl")
                .arg("kustomize")
                .arg(deploy.join(profile))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let rendered = String::from_utf8_lossy(&out.stdout).into_owned();
            let path = dir.path().join(format!("{profile}.yaml"));
            std::fs::write(&path, &rendered).unwrap();
            let text = validate(&[path]);
            assert!(
                text.contains("passed for resource statefulset/kiln"),
                "{text}"
            );
            if profile == "native" {
                assert!(rendered.contains("hostUsers: false"), "{rendered}");
                assert!(rendered.contains("- auto"), "{rendered}");
            } else {
                assert!(rendered.contains("- wasi"), "{rendered}");
                assert!(rendered.contains("runAsNonRoot: true"), "{rendered}");
            }
        }
    } else {
        eprintln!("kubectl is not installed: the kustomize renderings were not validated");
    }
    // The router keeps a tenant on one replica and includes the proxy settings the farm test
    // uses.
    let nginx = std::fs::read_to_string(deploy.join("base/nginx/nginx.conf")).unwrap();
    assert!(
        nginx.contains("hash $http_authorization consistent;"),
        "{nginx}"
    );
    assert!(
        nginx.contains("include /etc/nginx/kiln/kiln-proxy.conf;"),
        "{nginx}"
    );
}
