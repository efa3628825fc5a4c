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

#[test]
fn checkpoints_list_and_inspect_show_what_is_in_a_folder() {
    use sabot::checkpoint::storage::CheckpointStorage;
    use sabot::core::CheckpointId;

    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut w = storage.begin(CheckpointId(4)).unwrap();
    w.write("task-0/state.sbst", b"state bytes").unwrap();
    w.commit(
        1_700_000_000_000,
        [("source.offset".to_string(), "1234".to_string())].into(),
    )
    .unwrap();
    // An attempt cut off before its manifest.
    let mut w = storage.begin(CheckpointId(5)).unwrap();
    w.write("task-0/state.sbst", b"partial").unwrap();
    drop(w);

    let path = dir.path().to_str().unwrap();
    let o = sabot(&["checkpoints", "list", path]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("complete") && t.contains("incomplete"), "{t}");
    assert!(t.contains("1700000000000"), "{t}");

    let o = sabot(&["checkpoints", "inspect", path]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("Checkpoint 4"), "{t}");
    assert!(t.contains("all intact"), "{t}");
    assert!(t.contains("source.offset = 1234"), "{t}");
    assert!(t.contains("task-0/state.sbst"), "{t}");

    std::fs::write(
        storage.dir(CheckpointId(4)).join("task-0/state.sbst"),
        b"changed!!!!",
    )
    .unwrap();
    let t = text(&sabot(&["checkpoints", "inspect", path, "--id", "4"]));
    assert!(t.contains("DAMAGED"), "{t}");

    let o = sabot(&["checkpoints", "inspect", path, "--id", "5"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("_manifest"), "{}", text(&o));
    let o = sabot(&["checkpoints", "list", "/no/such/folder"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("is not a folder"), "{}", text(&o));
}

#[test]
fn nexmark_run_and_generate() {
    let o = sabot(&["nexmark", "--help"]);
    assert!(o.status.success());
    let t = text(&o);
    assert!(t.contains("run") && t.contains("generate"), "{t}");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = sabot(&[
        "nexmark",
        "run",
        "--query",
        "q2",
        "--events",
        "200000",
        "--parallelism",
        "2",
        "--no-progress",
        "--output",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("events/s") && t.contains("Result rows: "), "{t}");
    // Result files with the SQL column names.
    let first = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "csv"))
        .expect("a result file");
    let header = std::fs::read_to_string(first).unwrap();
    assert!(header.starts_with("auction,price\n"), "{header}");

    let gen_dir = dir.path().join("gen");
    for format in ["csv", "arrow"] {
        let o = sabot(&[
            "nexmark",
            "generate",
            "--events",
            "5000",
            "--out",
            gen_dir.to_str().unwrap(),
            "--format",
            format,
        ]);
        assert!(o.status.success(), "{}", text(&o));
        for kind in ["person", "auction", "bid"] {
            assert!(
                gen_dir.join(format!("{kind}.{format}")).is_file(),
                "{kind}.{format}"
            );
        }
    }
    let bids = std::fs::read_to_string(gen_dir.join("bid.csv")).unwrap();
    assert_eq!(bids.lines().count(), 1 + 4600);

    // Bad arguments: clear errors naming the problem.
    for (args, want) in [
        (
            &["nexmark", "run", "--query", "q6"][..],
            "unknown query `q6`",
        ),
        (
            &["nexmark", "run", "--query", "q0", "--rate", "0"][..],
            "--rate",
        ),
        (
            &[
                "nexmark",
                "run",
                "--query",
                "q0",
                "--checkpoint-dir",
                "/tmp/x",
            ][..],
            "--checkpoint-dir needs --output",
        ),
        (
            &["nexmark", "run", "--query", "q0", "--state-dir", "/tmp/x"][..],
            "--state-dir is for --state rocksdb",
        ),
    ] {
        let o = sabot(args);
        assert!(!o.status.success(), "{args:?}");
        let t = text(&o);
        assert!(t.contains(want), "{args:?}: {t}");
        assert!(!t.contains("panicked"), "{t}");
    }
}
