//! Runs every scenario script under `tests/scenarios/`, and shows that the
//! Figure 8 script catches the bug it is about.

use std::path::PathBuf;

use raft_core::sim::script::{run_script, run_script_with_bugs};
use raft_core::{Bug, BugSet};

fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(scenarios_dir().join(name)).expect("scenario file exists")
}

#[test]
fn every_scenario_passes() {
    let mut names: Vec<_> = std::fs::read_dir(scenarios_dir())
        .expect("scenario dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    names.sort();
    assert!(names.len() >= 9, "scenarios missing: {names:?}");
    for p in names {
        let text = std::fs::read_to_string(&p).expect("readable");
        if let Err(e) = run_script(&text) {
            panic!("{}: {e}", p.display());
        }
    }
}

#[test]
fn figure8_catches_committing_an_old_term_by_counting() {
    let text = read("figure8.txt");
    let err = run_script_with_bugs(&text, BugSet::only(Bug::CommitOldTermByCount))
        .expect_err("the bug must be caught");
    // The leader of term 3 commits entry 2 of term 1 as soon as a majority
    // holds it, which the script expects it not to do.
    assert!(err.reason.contains("commit"), "{err}");
}

#[test]
fn malformed_scripts_name_the_line() {
    let err = run_script("nodes 3\ncampaign 1\nfrobnicate 2\n").unwrap_err();
    assert_eq!(err.line, 3);
    assert!(err.reason.contains("unknown command"), "{err}");
    let err = run_script("campaign 1\n").unwrap_err();
    assert_eq!(err.line, 1);
    let err = run_script("nodes 3\ncampaign 7\n").unwrap_err();
    assert!(err.reason.contains("no node 7"), "{err}");
    let err = run_script("nodes 3\nexpect leader 1\n").unwrap_err();
    assert_eq!(err.line, 2);
    assert!(err.reason.contains("expected leader"), "{err}");
}
