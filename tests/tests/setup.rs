//! `scripts/setup` is idempotent: on a machine it already set up, a second
//! run succeeds, changes nothing and is quick.

use std::{process::Command, time::Instant};

use hopper_tests::workspace;

fn stamps() -> Vec<(String, std::time::SystemTime)> {
    let cache = std::env::var("HOPPER_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| workspace().join(".cache"));
    let mut v: Vec<_> = std::fs::read_dir(cache.join("stamps"))
        .expect("scripts/setup ran before the tests")
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().modified().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_second_setup_run_changes_nothing() {
    let setup = workspace().join("scripts/setup");
    let first = Command::new(&setup).output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let before = stamps();

    let started = Instant::now();
    let second = Command::new(&setup).output().unwrap();
    let took = started.elapsed();
    let out = String::from_utf8_lossy(&second.stdout).into_owned()
        + &String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{out}");
    for step in ["redis", "postgres", "libtorch", "model"] {
        assert!(out.contains(&format!("[setup] {step} ... ok")), "{out}");
    }
    for action in [
        "downloading",
        "installing",
        "installed ",
        "unpacked",
        "initdb done",
        "started postgres",
        "started redis",
        "created ",
        "restarting",
        "removing stale",
    ] {
        assert!(
            !out.contains(action),
            "second run did something ({action}):\n{out}"
        );
    }
    assert_eq!(stamps(), before, "stamps rewritten");
    assert!(took.as_secs() < 10, "second run took {took:?}");
}
