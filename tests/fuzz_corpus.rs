//! The fuzz target's body (fuzz/src/lib.rs, the same file cargo-fuzz builds) run as an ordinary
//! test on its committed corpus, its seeds, and deterministic mutations of them. fuzz/ is its
//! own workspace that needs nightly and libFuzzer, so nothing else would ever compile it: here
//! every `cargo test` does, and every invariant it checks runs on every input.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_bodies;

use std::path::{Path, PathBuf};

/// Runs one input, naming it if the body panics (a broken invariant or a crash).
fn run(what: &str, data: &[u8]) {
    if let Err(panic) = std::panic::catch_unwind(|| fuzz_bodies::dhcp_packet(data)) {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        panic!(
            "fuzz target dhcp_packet failed on {what} ({} bytes {data:02x?}): {message}",
            data.len()
        );
    }
}

fn corpus_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/dhcp_packet");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read the fuzz corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn the_dhcp_packet_target_passes_its_corpus() {
    let files = corpus_files();
    assert!(files.len() >= 30, "the committed corpus is there: {files:?}");
    for file in &files {
        let data = std::fs::read(file).expect("read corpus file");
        run(&file.display().to_string(), &data);
    }
}

#[test]
fn the_dhcp_packet_target_passes_its_seeds_and_their_mutations() {
    let seeds = fuzz_bodies::seed_inputs();
    assert!(seeds.len() > 100);
    for (i, seed) in seeds.iter().enumerate() {
        run(&format!("seed {i}"), seed);
    }
    // xorshift64: the same inputs on every run, so a failure reproduces.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..4000 {
        let mut data = seeds[(next() as usize) % seeds.len()].clone();
        for _ in 0..1 + next() % 4 {
            if data.len() < 2 {
                break;
            }
            // Leave the selector byte; change the packet, mostly its options.
            let at = 1 + (next() as usize) % (data.len() - 1);
            match next() % 3 {
                0 => data[at] = next() as u8,
                1 => data.insert(at, next() as u8),
                _ => data.truncate(at),
            }
        }
        run(&format!("mutation {round}"), &data);
    }
}
