//! The cost of validation on the program's example resources (base definitions plus the
//! program profiles they claim): `cargo bench --bench validation` (see bench/results.md).

use std::path::Path;
use std::time::Instant;

use pivot_fhir::validation::{enforce, warm_up};
use serde_json::Value;

fn main() {
    let started = Instant::now();
    warm_up();
    println!(
        "definitions compiled in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/program");
    for name in [
        "patient.json",
        "task.json",
        "observation.json",
        "servicerequest.json",
    ] {
        let text = std::fs::read_to_string(root.join(name)).unwrap_or_default();
        let resource: Value = serde_json::from_str(&text).unwrap_or_default();
        let Some(map) = resource.as_object().cloned() else {
            eprintln!("{name}: not a JSON object");
            continue;
        };
        for _ in 0..200 {
            let _ = enforce(&map);
        }
        let mut times: Vec<f64> = Vec::with_capacity(5_000);
        for _ in 0..5_000 {
            let start = Instant::now();
            let result = enforce(&map);
            times.push(start.elapsed().as_secs_f64() * 1e6);
            if let Err(err) = result {
                eprintln!("{name} does not conform: {err}");
                return;
            }
        }
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        let at = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
        println!(
            "{name}: mean {mean:.0} µs, p50 {:.0} µs, p99 {:.0} µs (base + claimed program profiles)",
            at(0.5),
            at(0.99)
        );
    }
}
