//! Every file of every target's corpus (`corpus/TARGET/`), replayed through the target's
//! check without AFL++: the seeds, what fuzzing found worth keeping, and every input that once
//! failed a check.

use std::path::{Path, PathBuf};

fn corpus(name: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no inputs", dir.display());
    files
}

fn replay(name: &str) {
    let target = dime_fuzz::target(name).expect("a target");
    for file in corpus(name) {
        let data = std::fs::read(&file).unwrap();
        let outcome = std::panic::catch_unwind(|| (target.check)(&data));
        assert!(outcome.is_ok(), "{} fails {name}'s check", file.display());
    }
}

#[test]
fn config() {
    replay("config");
}

#[test]
fn range() {
    replay("range");
}

#[test]
fn streamer_path() {
    replay("streamer_path");
}

#[test]
fn canonical_path() {
    replay("canonical_path");
}

#[test]
fn cache_key() {
    replay("cache_key");
}

#[test]
fn playlist() {
    replay("playlist");
}

#[test]
fn forms() {
    replay("forms");
}

#[test]
fn every_target_has_a_corpus_and_a_test_here() {
    let here = include_str!("corpus.rs");
    for target in dime_fuzz::TARGETS {
        assert!(!corpus(target.name).is_empty());
        assert!(
            here.contains(&format!("replay(\"{}\")", target.name)),
            "no test replays {}",
            target.name
        );
    }
}
