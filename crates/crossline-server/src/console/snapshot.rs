//! Reviewed snapshots of rendered markup, kept under `src/console/snapshots/`.
//!
//! A test renders a fixed input and compares it with the file. On purpose changes, run
//! `UPDATE_SNAPSHOTS=1 cargo test -p crossline-server console`, read the diff and commit it.

use std::path::PathBuf;

/// One tag per line, so a change shows as a readable diff.
fn lines(markup: &str) -> String {
    let mut text = markup.replace("><", ">\n<");
    text.push('\n');
    text
}

/// Compare `markup` with the snapshot `name`, writing it when asked to or when it is new.
pub fn assert_snapshot(name: &str, markup: &str) {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "src", "console", "snapshots", name].iter().collect();
    let actual = lines(markup);
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    match std::fs::read_to_string(&path) {
        Ok(expected) if !update => {
            if expected != actual {
                let first = expected.lines().zip(actual.lines()).position(|(a, b)| a != b).unwrap_or(0);
                panic!(
                    "snapshot {name} changed from line {}:\n  expected: {}\n  actual:   {}\nIf the change is intended, run with UPDATE_SNAPSHOTS=1 and review the diff.",
                    first + 1,
                    expected.lines().nth(first).unwrap_or(""),
                    actual.lines().nth(first).unwrap_or(""),
                );
            }
        }
        existing => {
            std::fs::create_dir_all(path.parent().expect("snapshot directory")).expect("create snapshot directory");
            std::fs::write(&path, &actual).expect("write snapshot");
            assert!(
                update || existing.is_ok(),
                "new snapshot written to {}: review it, commit it and run again",
                path.display()
            );
        }
    }
}
