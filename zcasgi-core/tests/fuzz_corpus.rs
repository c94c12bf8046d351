//! Replays the committed fuzz seeds (`fuzz/seeds/<target>/`) through the bodies of the
//! cargo-fuzz targets, which this test includes from `fuzz/src/`: an ordinary `cargo test` on
//! stable re-checks every input the fuzzers saved, with the same assertions.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../fuzz/src/lib.rs"]
mod fuzz;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files in `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every seed of `target` through its body; fails listing the seeds that failed.
fn replay(target: &str) {
    let (_, run) = fuzz::TARGETS.iter().find(|(name, _)| *name == target).unwrap();
    let seeds = files(&fuzz_dir().join("seeds").join(target));
    assert!(!seeds.is_empty(), "no seeds for {target}");
    let failed: Vec<String> = seeds
        .iter()
        .filter(|seed| {
            let input = std::fs::read(seed).unwrap();
            catch_unwind(AssertUnwindSafe(|| run(&input))).is_err()
        })
        .map(|seed| seed.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{} of {} seeds failed: {failed:#?}", failed.len(), seeds.len());
}

macro_rules! replay_tests {
    ($($target:ident),*) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target));
            }
        )*

        #[test]
        fn every_target_is_replayed() {
            let mut names: Vec<&str> = fuzz::TARGETS.iter().map(|(name, _)| *name).collect();
            names.sort_unstable();
            let mut replayed = vec![$(stringify!($target)),*];
            replayed.sort_unstable();
            assert_eq!(names, replayed);
            let mut binaries: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
                .iter()
                .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
                .collect();
            binaries.sort_unstable();
            assert_eq!(binaries, names, "fuzz_targets/ and fuzz::TARGETS differ");
        }
    };
}

replay_tests!(decode, http_head, http_body, handshake, deflate, driver, engineio, endpoint);
