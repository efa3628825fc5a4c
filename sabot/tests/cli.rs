//! The `sabot` binary: help, the demo, and clear errors for bad arguments.

use std::process::{Command, Output};

fn sabot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sabot"))
        .args(args)
        .output()
        .expect("the sabot binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn help_lists_commands_and_options() {
    let o = sabot(&["--help"]);
    assert!(o.status.success());
    let t = text(&o);
    assert!(t.contains("demo") && t.contains("--log-level"), "{t}");

    let o = sabot(&["demo", "--help"]);
    assert!(o.status.success());
    let t = text(&o);
    for opt in [
        "--events",
        "--parallelism",
        "--seed",
        "--threshold",
        "--state",
        "--state-dir",
        "--no-progress",
    ] {
        assert!(t.contains(opt), "demo --help lacks {opt}: {t}");
    }
}

#[test]
fn demo_prints_throughput_and_alerts() {
    let o = sabot(&[
        "demo",
        "--events",
        "50000",
        "--parallelism",
        "2",
        "--accounts",
        "500",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("Processed 50000 transactions"), "{t}");
    assert!(t.contains("events/s"), "{t}");
    assert!(
        t.contains("Window alerts") && t.contains("Spike alerts"),
        "{t}"
    );
}

#[test]
fn demo_is_deterministic_for_a_seed_at_any_parallelism_and_state_backend() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().to_str().unwrap().to_owned();
    let alerts = |p: &str, state: &[&str]| {
        let mut args = vec![
            "demo",
            "--events",
            "30000",
            "--accounts",
            "300",
            "--parallelism",
            p,
            "--seed",
            "9",
        ];
        args.extend_from_slice(state);
        let o = sabot(&args);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with("Processed") && !l.starts_with("Throughput"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let memory = alerts("1", &[]);
    assert_eq!(memory, alerts("3", &[]));
    assert_eq!(
        memory,
        alerts("2", &["--state", "rocksdb", "--state-dir", &state_dir])
    );
    // The RocksDB working folders are gone once the demo ends.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bad_arguments_are_clear_errors_not_panics() {
    for (args, expect) in [
        (&["demo", "--parallelism", "0"][..], "invalid parallelism 0"),
        (&["demo", "--events", "many"][..], "invalid value 'many'"),
        (&["demo", "--accounts", "0"][..], "--accounts"),
        (&["demo", "--threshold=-5"][..], "--threshold"),
        (
            &["demo", "--parallelism", "100000"][..],
            "invalid parallelism",
        ),
        (&["launch"][..], "unrecognized subcommand"),
        (&["demo", "--state", "disk"][..], "invalid value 'disk'"),
        (
            &["demo", "--state-dir", "/tmp"][..],
            "--state-dir is for --state rocksdb",
        ),
        (
            &[
                "demo",
                "--state",
                "rocksdb",
                "--state-dir",
                "/dev/null/sabot",
            ][..],
            "/dev/null/sabot",
        ),
    ] {
        let o = sabot(args);
        let t = text(&o);
        assert!(!o.status.success(), "{args:?} must fail: {t}");
        assert!(t.contains(expect), "{args:?}: expected `{expect}` in: {t}");
        assert!(!t.contains("panicked"), "{args:?} panicked: {t}");
    }
}
