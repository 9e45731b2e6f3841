//! A bounded fuzz run of every target in `pivot_fhir::fuzz`, on stable Rust, as part of the test
//! suite: the committed corpus (`fuzz/corpus/TARGET`) and the regressions
//! (`fuzz/regressions/TARGET`) as they are, then mutations of them for `FUZZ_SECONDS` seconds
//! per target (default 5). An input that panics or runs longer than `FUZZ_HANG_SECONDS` (default
//! 10) fails the test and is saved under `target/fuzz-failures/` to become a regression.
//! `FUZZ_SEED` repeats a run. `scripts/fuzz.sh` runs it longer, in a release build.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A small, fast, seedable generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Fragments worth inserting: the syntax each parser reads.
fn dictionary(target: &str) -> &'static [&'static str] {
    match target {
        "search_query" => &[
            "&",
            "=",
            ",",
            "|",
            "$",
            ":",
            ".",
            "_has:",
            ":missing=",
            ":exact",
            ":contains",
            ":not",
            ":text",
            ":identifier",
            ":below",
            ":above",
            ":in",
            ":iterate",
            "_text=",
            "_content=",
            "http://terminology.hl7.org/CodeSystem/v3-RoleCode|FAMMEMB",
            "_include=",
            "_revinclude=",
            "*",
            "_sort=-",
            "_count=",
            "_total=accurate",
            "_summary=",
            "_elements=",
            "eq",
            "ne",
            "gt",
            "lt",
            "ge",
            "le",
            "sa",
            "eb",
            "ap",
            "%00",
            "%25",
            "%5C",
            "\\",
            "2020-02-30T25:61:61Z",
            "1e400",
            "-0",
            "subject:Patient.",
            "Patient/",
            "http://x/",
        ],
        "fhirpath" => &[
            ".",
            "(",
            ")",
            "[",
            "]",
            "'",
            "`",
            "where(",
            "select(",
            "repeat(",
            "descendants()",
            "children()",
            "ofType(",
            "as ",
            "is ",
            "resolve()",
            "extension('",
            "%resource",
            "$this",
            "$index",
            "and ",
            "or ",
            "implies ",
            "xor ",
            " | ",
            "~",
            "!=",
            "@2020-01",
            "@T12:00",
            "1.0 'mg'",
            "9999999999999999999",
            "iif(",
            "aggregate(",
            "trace(",
            "substring(",
            "matches('",
            "replaceMatches('(a*)*",
            "toQuantity(",
            "combine(",
        ],
        "jwt" => &[
            ".",
            "eyJ",
            "eyJhbGciOiJFUzI1NiJ9",
            "eyJhbGciOiJub25lIn0",
            "eyJhbGciOiJIUzI1NiJ9",
            "e30",
            "==",
            "-",
            "_",
        ],
        _ => &[
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\"",
            "\\u0000",
            "\\ud800",
            "null",
            "true",
            "1e400",
            "-0",
            "123456789012345678901234567890",
            "\"resourceType\"",
            "\"Patient\"",
            "\"Bundle\"",
            "\"extension\"",
            "\"url\"",
            "\"reference\"",
            "\"#\"",
            "\"urn:uuid:",
            "\"op\"",
            "\"path\"",
            "\"/-\"",
            "\"~1\"",
            "\"value\"",
            "\"entry\"",
            "\"request\"",
            "\"method\"",
            "\"PUT\"",
            "\"fullUrl\"",
            "\"contained\"",
            "\"_given\"",
        ],
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], target: &str) -> Vec<u8> {
    let mut input = seeds[rng.below(seeds.len())].clone();
    let words = dictionary(target);
    for _ in 0..=rng.below(6) {
        let at = rng.below(input.len() + 1);
        match rng.below(8) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] = *b"\0\xff\"{}[]:,\\.|$&=%'".get(rng.below(17)).unwrap_or(&0);
            }
            2 | 3 => {
                let word = words[rng.below(words.len())].as_bytes();
                input.splice(at..at, word.iter().copied());
            }
            4 if !input.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(input.len());
                input.drain(at.min(end)..end);
            }
            5 if !input.is_empty() => {
                let start = rng.below(input.len());
                let end = (start + 1 + rng.below(64)).min(input.len());
                let copy = input[start..end].to_vec();
                input.splice(at..at, copy);
            }
            6 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            _ => {
                let byte = (rng.next() & 0xff) as u8;
                input.insert(at, byte);
            }
        }
    }
    input.truncate(64 * 1024);
    input
}

fn read_folder(folder: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .collect()
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Saves a failing input and returns where.
fn save_failure(target: &str, input: &[u8]) -> PathBuf {
    let folder = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("..")
        .join("fuzz-failures");
    let _ = std::fs::create_dir_all(&folder);
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let path = folder.join(format!("{target}-{hash:016x}"));
    let _ = std::fs::write(&path, input);
    path
}

fn fuzz(target: &str) {
    let Some(&(_, run)) = pivot_fhir::fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
    else {
        panic!("no fuzz target {target}")
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut seeds = read_folder(&root.join("corpus").join(target));
    let regressions = read_folder(&root.join("regressions").join(target));
    assert!(!seeds.is_empty(), "the corpus of {target} is empty");
    let seconds = setting("FUZZ_SECONDS", 5);
    let hang = Duration::from_secs(setting("FUZZ_HANG_SECONDS", 10));
    let seed = setting(
        "FUZZ_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |t| t.as_nanos() as u64),
    ) | 1;
    eprintln!("{target}: FUZZ_SEED={seed}, {seconds} s");

    // The target runs on a worker thread so that a hang is noticed instead of waited for.
    let (inputs, work) = mpsc::channel::<Vec<u8>>();
    let (results, answers) = mpsc::channel::<Result<(), String>>();
    std::thread::spawn(move || {
        while let Ok(input) = work.recv() {
            let outcome = std::panic::catch_unwind(|| run(&input)).map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            });
            if results.send(outcome).is_err() {
                return;
            }
        }
    });
    let check = |input: Vec<u8>| {
        let kept = input.clone();
        if inputs.send(input).is_err() {
            panic!("{target}: the worker stopped");
        }
        match answers.recv_timeout(hang) {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                let path = save_failure(target, &kept);
                panic!("{target} panicked ({message}) on {}", path.display());
            }
            Err(_) => {
                let path = save_failure(target, &kept);
                panic!("{target} ran longer than {hang:?} on {}", path.display());
            }
        }
    };
    for input in regressions.iter().chain(&seeds) {
        check(input.clone());
    }
    seeds.extend(regressions);
    let mut rng = Rng(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        check(mutate(&mut rng, &seeds, target));
        runs += 1;
    }
    eprintln!("{target}: {runs} mutated inputs, no failure");
}

#[test]
fn resource_json() {
    fuzz("resource_json");
}

#[test]
fn search_query() {
    fuzz("search_query");
}

#[test]
fn fhirpath() {
    fuzz("fhirpath");
}

#[test]
fn patch() {
    fuzz("patch");
}

#[test]
fn jwt() {
    fuzz("jwt");
}

#[test]
fn bundle_entries() {
    fuzz("bundle_entries");
}
