//! The `xdpboot` command line as an operator meets it: `xdpboot check` on a config of the
//! test's own. No privileges, no network.

use std::path::PathBuf;
use std::process::Command;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(role: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("xdpboot-cli-{role}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}

#[test]
fn check_prints_the_policy_as_a_table_with_where_each_loader_comes_from() {
    let dir = temp_dir("check");
    let (root, package) = (dir.0.join("tftp"), dir.0.join("ipxe"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(root.join("undionly.kpxe"), b"operator's").unwrap();
    // Debian 12's name for the x86-64 EFI build.
    std::fs::write(package.join("ipxe.efi"), b"package's").unwrap();
    let config = dir.0.join("xdpboot.toml");
    std::fs::write(
        &config,
        format!(
            "[tftp]\nroot = {root:?}\n\n[loaders]\nsearch = [{package:?}]\n\n\
             [[policy]]\nname = \"lab-bios\"\narch = [\"bios\"]\nmac = [\"52:54:00:12:34:56\"]\n\
             tftp = \"undionly.kpxe\"\n\n\
             [[policy]]\nname = \"uefi\"\narch = [\"uefi-x64\"]\ntftp = \"ipxe-amd64.efi\"\n\n\
             [[policy]]\nname = \"arm\"\narch = [\"uefi-arm64\"]\ntftp = \"ipxe-arm64.efi\"\n\n\
             [[policy]]\nname = \"rest\"\nsilent = true\n"
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xdpboot"))
        .arg("check")
        .arg("--config")
        .arg(&config)
        .env("NO_COLOR", "1")
        .output()
        .expect("xdpboot runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let table: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|line| !line.starts_with("policy"))
        .skip(1)
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    let canonical = |p: PathBuf| p.canonicalize().unwrap().display().to_string();
    assert_eq!(
        table,
        [
            vec!["RULE", "WHEN", "ACTION"],
            vec![
                "lab-bios",
                "arch=bios mac=52:54:00:12:34:56",
                "tftp undionly.kpxe",
                &format!("({})", canonical(root.join("undionly.kpxe"))),
            ],
            vec![
                "uefi",
                "arch=uefi-x64",
                "tftp ipxe-amd64.efi",
                &format!("({})", canonical(package.join("ipxe.efi"))),
            ],
            vec![
                "arm",
                "arch=uefi-arm64",
                "tftp ipxe-arm64.efi",
                "(MISSING: clients matching this rule are not answered)",
            ],
            vec!["rest", "any client", "silent"],
        ],
        "{stdout}"
    );
    assert!(
        !stdout.contains("Match {"),
        "no Rust Debug output: {stdout}"
    );
}
