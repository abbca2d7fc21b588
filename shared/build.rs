//! Rebuilds the crate when a migration changes (refinery embeds them), and
//! stamps the build with the commit it was built from: `HOPPER_GIT_SHA` for
//! `build_info.rs`, the short sha of `HEAD`.
//!
//! `HOPPER_GIT_SHA` in the build's environment wins (a packager that knows
//! the commit). Otherwise a release build runs `git rev-parse --short HEAD`
//! (`unknown` when git or the repository is absent: a source tarball still
//! builds), and the script runs again when `HEAD` moves: a commit, a
//! checkout, or a branch switch. A debug build (tests, development) is
//! stamped `dev` and does not watch `HEAD`: every crate of the workspace
//! depends on this one, so a stamp that followed `HEAD` rebuilt them all on
//! every commit.

use std::{path::Path, process::Command};

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=HOPPER_GIT_SHA");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let sha = std::env::var("HOPPER_GIT_SHA")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            if !release {
                return Some("dev".to_owned());
            }
            watch_head();
            git(&["rev-parse", "--short", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=HOPPER_GIT_SHA={sha}");
}

/// One line of git's output, or `None` when git fails or is not installed.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let line = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !line.is_empty()).then_some(line)
}

/// Asks Cargo to run this script again when `HEAD` or the branch it points to
/// moves. Only files that exist are named: Cargo reruns a script on every
/// build for a missing one.
fn watch_head() {
    let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) else {
        return;
    };
    let git_dir = Path::new(&git_dir);
    watch(&git_dir.join("HEAD"));
    // In a linked worktree the branches live in the common directory.
    let common = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"])
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| git_dir.to_path_buf());
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let loose = common.join(branch);
        if loose.exists() {
            watch(&loose);
        } else if let Some(dir) = loose.parent() {
            // A packed branch (`git gc`) becomes a loose file here when it moves.
            watch(dir);
        }
        watch(&common.join("packed-refs"));
    }
}

fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
