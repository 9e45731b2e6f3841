//! Load generator for pivot-fhir: runs one scenario at a fixed number of connections for a fixed
//! time and prints throughput and latency percentiles.
//!
//! Scenarios: `ceiling` (GET /health: the HTTP ceiling of the same server and machine),
//! `preload` (PUT Patient/bench-{i} for i in 0..count), `create` (POST Patient), `read` (GET
//! Patient/bench-{random}), `update` (PUT Patient/bench-{i} with If-Match; each connection owns
//! its own ids, so no update conflicts), `seed-program` (per patient i: the Patient, 5
//! Observations, a CarePlan and a ServiceRequest), and the searches `search-identifier`,
//! `search-name`, `search-subject-code`, `search-patient-date`, `search-include` over that data,
//! and `mixed` (the soak: 40% reads, 25% of those searches, 15% creates, 15% updates, 5%
//! transactions of three creates). Every non-2xx answer is counted as an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Server root, e.g. http://127.0.0.1:8080
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    root: String,
    /// ceiling | preload | seed-program | ingest | create | read | update | search-* | mixed
    #[arg(long)]
    scenario: String,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds to run (not used by preload).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Number of preloaded patients (ids bench-0 .. bench-{count-1}).
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// First id of the range `preload` writes and `update` changes.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Version every preloaded patient has when `update` starts.
    #[arg(long, default_value_t = 1)]
    initial_version: u64,
    /// `ingest`: a folder of transaction Bundles (JSON) to post.
    #[arg(long)]
    bundle_dir: Option<std::path::PathBuf>,
    /// `ingest`: merge all the Bundles of the folder into one transaction, this many copies over
    /// (each copy with its own urn:uuid identities); 0 posts the files one by one.
    #[arg(long, default_value_t = 0)]
    merge: usize,
    /// Bearer token sent with every request.
    #[arg(long, env = "PIVOT_TOKEN")]
    token: Option<String>,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

fn patient(id: Option<&str>, seed: u64) -> String {
    let id_member = id.map(|id| format!("\"id\":\"{id}\",")).unwrap_or_default();
    format!(
        r#"{{"resourceType":"Patient",{id_member}"identifier":[{{"system":"https://medicaid.example.gov/id","value":"MCD-{seed:09}"}}],"active":true,"name":[{{"use":"official","family":"Family{f}","given":["Given{g}","Middle"]}}],"telecom":[{{"system":"phone","value":"555-{p:04}","use":"mobile"}}],"gender":"{gender}","birthDate":"{year}-0{month}-1{day}","address":[{{"use":"home","line":["{seed} Main St"],"city":"Jackson","state":"MS","postalCode":"392{z:02}"}}],"extension":[{{"url":"https://pivot-fhir.example.org/fhir/StructureDefinition/eligibility-category","valueCode":"primary-care"}}]}}"#,
        f = seed % 997,
        g = seed % 389,
        p = seed % 10_000,
        gender = if seed % 2 == 0 { "female" } else { "male" },
        year = 1950 + seed % 70,
        month = 1 + seed % 9,
        day = seed % 10,
        z = seed % 100,
    )
}

/// A small fast PRNG (xorshift) so request choice costs nothing.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    if args.scenario == "preload" || args.scenario == "seed-program" {
        preload(&args).await;
        return;
    }
    if args.scenario == "ingest" {
        ingest(&args).await;
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for connection in 0..args.connections {
        let args = args.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            run_connection(&args, connection, deadline, &errors).await
        }));
    }
    let mut latencies: Vec<u32> = Vec::new();
    for task in tasks {
        if let Ok(mut samples) = task.await {
            latencies.append(&mut samples);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(latencies[index.min(latencies.len() - 1)]) / 1000.0
    };
    let total = latencies.len();
    let errors = errors.load(Ordering::Relaxed);
    let rate = total as f64 / elapsed;
    if args.json {
        println!(
            "{{\"scenario\":\"{}\",\"connections\":{},\"requests\":{total},\"errors\":{errors},\"per_second\":{rate:.0},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
            args.scenario,
            args.connections,
            percentile(0.5),
            percentile(0.99),
            percentile(1.0)
        );
    } else {
        println!(
            "{:<8} conns={:<3} requests={total:<8} errors={errors:<5} {rate:>9.0}/s  p50={:.2}ms p99={:.2}ms max={:.2}ms",
            args.scenario,
            args.connections,
            percentile(0.5),
            percentile(0.99),
            percentile(1.0)
        );
    }
}

fn client(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(value) =
        token.and_then(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).ok())
    {
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .http1_only()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()
        .unwrap_or_default()
}

async fn run_connection(
    args: &Args,
    connection: usize,
    deadline: Instant,
    errors: &AtomicU64,
) -> Vec<u32> {
    let client = client(args.token.as_deref());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (connection as u64 + 1) * 0x1000_0001);
    let mut latencies = Vec::with_capacity(100_000);
    // `update`: this connection's ids and the version each is at.
    let owned: Vec<u64> = (args.start..args.start + args.count)
        .filter(|i| (*i as usize) % args.connections == connection)
        .collect();
    let mut versions = vec![args.initial_version; owned.len()];
    let mut iteration: u64 = 0;
    while Instant::now() < deadline {
        iteration += 1;
        let request = match args.scenario.as_str() {
            "ceiling" => client.get(format!("{}/health", args.root)),
            "create" => client
                .post(format!("{}/fhir/Patient", args.root))
                .header("Content-Type", "application/fhir+json")
                .header("Prefer", "return=minimal")
                .body(patient(None, rng.next() % 1_000_000)),
            "read" => client.get(format!(
                "{}/fhir/Patient/bench-{}",
                args.root,
                rng.next() % args.count
            )),
            "search-identifier" => client.get(format!(
                "{}/fhir/Patient?identifier=https://medicaid.example.gov/id|MCD-{:09}",
                args.root,
                rng.next() % args.count
            )),
            "search-name" => client.get(format!(
                "{}/fhir/Patient?name=Family{}",
                args.root,
                rng.next() % 997
            )),
            "search-subject-code" => {
                let i = rng.next() % args.count;
                client.get(format!(
                    "{}/fhir/Observation?subject=Patient/bench-{i}&code=http://loinc.org|{}",
                    args.root,
                    LOINC[(i % 5) as usize]
                ))
            }
            "search-patient-date" => client.get(format!(
                "{}/fhir/Observation?patient=Patient/bench-{}&date=ge2025-06-01",
                args.root,
                rng.next() % args.count
            )),
            "search-include" => client.get(format!(
                "{}/fhir/ServiceRequest?status=active&_include=ServiceRequest:subject",
                args.root
            )),
            // the soak mix: reads, the reference searches, creates, updates and transactions
            "mixed" => {
                let i = rng.next() % args.count;
                match rng.next() % 20 {
                    0..=7 => client.get(format!("{}/fhir/Patient/bench-{i}", args.root)),
                    8 => client.get(format!(
                        "{}/fhir/Patient?identifier=https://medicaid.example.gov/id|MCD-{i:09}",
                        args.root
                    )),
                    9 => client.get(format!(
                        "{}/fhir/Patient?name=Family{}",
                        args.root,
                        i % 997
                    )),
                    10 => client.get(format!(
                        "{}/fhir/Observation?subject=Patient/bench-{i}&code=http://loinc.org|{}",
                        args.root,
                        LOINC[(i % 5) as usize]
                    )),
                    11 => client.get(format!(
                        "{}/fhir/Observation?patient=Patient/bench-{i}&date=ge2025-06-01",
                        args.root
                    )),
                    12 => client.get(format!(
                        "{}/fhir/ServiceRequest?subject=Patient/bench-{i}&_include=ServiceRequest:subject",
                        args.root
                    )),
                    13..=15 => client
                        .post(format!("{}/fhir/Patient", args.root))
                        .header("Content-Type", "application/fhir+json")
                        .header("Prefer", "return=minimal")
                        .body(patient(None, rng.next() % 1_000_000)),
                    16..=18 => client
                        .put(format!("{}/fhir/Patient/bench-{i}", args.root))
                        .header("Content-Type", "application/fhir+json")
                        .header("Prefer", "return=minimal")
                        .body(patient(Some(&format!("bench-{i}")), i + iteration)),
                    _ => {
                        let entries: Vec<String> = (0..3)
                            .map(|_| {
                                format!(
                                    r#"{{"resource":{},"request":{{"method":"POST","url":"Patient"}}}}"#,
                                    patient(None, rng.next() % 1_000_000)
                                )
                            })
                            .collect();
                        client
                            .post(format!("{}/fhir", args.root))
                            .header("Content-Type", "application/fhir+json")
                            .body(format!(
                                r#"{{"resourceType":"Bundle","type":"transaction","entry":[{}]}}"#,
                                entries.join(",")
                            ))
                    }
                }
            }
            "update" => {
                if owned.is_empty() {
                    break;
                }
                let slot = (iteration as usize) % owned.len();
                let id = format!("bench-{}", owned[slot]);
                client
                    .put(format!("{}/fhir/Patient/{id}", args.root))
                    .header("Content-Type", "application/fhir+json")
                    .header("If-Match", format!("W/\"{}\"", versions[slot]))
                    .header("Prefer", "return=minimal")
                    .body(patient(Some(&id), owned[slot] + iteration))
            }
            other => {
                eprintln!("unknown scenario {other}");
                return latencies;
            }
        };
        let start = Instant::now();
        match request.send().await {
            Ok(response) => {
                let ok = response.status().is_success();
                let _ = response.bytes().await;
                latencies.push(start.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                if ok {
                    if args.scenario == "update" && !owned.is_empty() {
                        let slot = (iteration as usize) % owned.len();
                        versions[slot] += 1;
                    }
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    latencies
}

/// The Bundles to post for `ingest`: (JSON text, entries).
fn ingest_bundles(args: &Args) -> Vec<(String, u64)> {
    let Some(dir) = &args.bundle_dir else {
        return Vec::new();
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let texts: Vec<String> = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .collect();
    let count = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|b| b["entry"].as_array().map(|e| e.len() as u64))
            .unwrap_or(0)
    };
    if args.merge == 0 {
        return texts
            .into_iter()
            .map(|t| {
                let n = count(&t);
                (t, n)
            })
            .collect();
    }
    let mut entries = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for copy in 0..args.merge {
        for text in &texts {
            // a copy's identities differ in their first hex digits, so the copies do not collide
            let renamed = text.replace("urn:uuid:", &format!("urn:uuid:{copy:02x}"));
            if let Ok(bundle) = serde_json::from_str::<serde_json::Value>(&renamed) {
                // records share some resources (the same organizations): keep each fullUrl once
                for entry in bundle["entry"].as_array().cloned().unwrap_or_default() {
                    let full_url = entry["fullUrl"].as_str().unwrap_or_default().to_string();
                    if seen.insert(full_url) {
                        entries.push(entry);
                    }
                }
            }
        }
    }
    let n = entries.len() as u64;
    let bundle =
        serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    vec![(bundle.to_string(), n)]
}

/// Posts transaction Bundles for `seconds` on `connections` connections and reports resources/s.
async fn ingest(args: &Args) {
    let bundles = Arc::new(ingest_bundles(args));
    if bundles.is_empty() {
        eprintln!("ingest needs --bundle-dir with transaction Bundles");
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for connection in 0..args.connections {
        let (bundles, root, token) = (bundles.clone(), args.root.clone(), args.token.clone());
        tasks.push(tokio::spawn(async move {
            let client = client(token.as_deref());
            let (mut resources, mut failures, mut latencies) = (0u64, 0u64, Vec::new());
            let mut next = connection;
            while Instant::now() < deadline {
                let (text, entries) = &bundles[next % bundles.len()];
                next += 1;
                let start = Instant::now();
                let response = client
                    .post(format!("{root}/fhir"))
                    .header("Content-Type", "application/fhir+json")
                    .header("Prefer", "return=minimal")
                    .body(text.clone())
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        resources += entries;
                        latencies.push(start.elapsed().as_millis() as u64);
                    }
                    _ => failures += 1,
                }
            }
            (resources, failures, latencies)
        }));
    }
    let (mut resources, mut failures, mut latencies) = (0u64, 0u64, Vec::new());
    for task in tasks {
        if let Ok((r, f, mut l)) = task.await {
            resources += r;
            failures += f;
            latencies.append(&mut l);
        }
    }
    latencies.sort_unstable();
    let seconds = started.elapsed().as_secs_f64();
    let at = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "ingest   conns={:<3} bundles={:<6} failures={failures:<4} {:>8.0} resources/s  bundle p50={}ms p99={}ms max={}ms (entries per bundle: {})",
        args.connections,
        latencies.len(),
        resources as f64 / seconds,
        at(0.5),
        at(0.99),
        at(1.0),
        bundles
            .iter()
            .map(|b| b.1.to_string())
            .collect::<Vec<_>>()
            .join("/")
    );
}

const LOINC: [&str; 5] = ["88122-7", "88123-5", "39156-5", "8480-6", "71802-3"];

/// The program's resources for patient `i`: (path, body).
fn program_resources(i: u64) -> Vec<(String, String)> {
    let patient_id = format!("bench-{i}");
    let mut out = vec![(
        format!("Patient/{patient_id}"),
        patient(Some(&patient_id), i),
    )];
    for k in 0..5u64 {
        let id = format!("obs-{i}-{k}");
        let day = 1 + (i * 7 + k * 3) % 28;
        let month = 1 + (i + k) % 12;
        let year = 2024 + (i + k) % 3;
        out.push((
            format!("Observation/{id}"),
            format!(
                r#"{{"resourceType":"Observation","id":"{id}","status":"final","category":[{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"social-history"}}]}}],"code":{{"coding":[{{"system":"http://loinc.org","code":"{code}"}}]}},"subject":{{"reference":"Patient/{patient_id}"}},"effectiveDateTime":"{year}-{month:02}-{day:02}T10:00:00Z","valueQuantity":{{"value":{value}.5,"unit":"kg/m2","system":"http://unitsofmeasure.org","code":"kg/m2"}}}}"#,
                code = LOINC[((i + k) % 5) as usize],
                value = 18 + (i + k) % 20,
            ),
        ));
    }
    out.push((
        format!("CarePlan/cp-{i}"),
        format!(r#"{{"resourceType":"CarePlan","id":"cp-{i}","status":"active","intent":"plan","subject":{{"reference":"Patient/{patient_id}"}},"period":{{"start":"2025-01-01"}}}}"#),
    ));
    out.push((
        format!("ServiceRequest/sr-{i}"),
        format!(
            r#"{{"resourceType":"ServiceRequest","id":"sr-{i}","status":"{status}","intent":"order","category":[{{"coding":[{{"system":"http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes","code":"food-insecurity"}}]}}],"subject":{{"reference":"Patient/{patient_id}"}},"performer":[{{"reference":"Organization/food-bank-{bank}"}}],"authoredOn":"2025-0{m}-15"}}"#,
            status = if i % 2 == 0 { "active" } else { "completed" },
            bank = i % 7,
            m = 1 + i % 9,
        ),
    ));
    out
}

async fn preload(args: &Args) {
    let next = Arc::new(AtomicU64::new(args.start));
    let end = args.start + args.count;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let next = next.clone();
        let root = args.root.clone();
        let token = args.token.clone();
        let program = args.scenario == "seed-program";
        tasks.push(tokio::spawn(async move {
            let client = client(token.as_deref());
            let mut failures = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let resources = if program {
                    program_resources(i)
                } else {
                    let id = format!("bench-{i}");
                    vec![(format!("Patient/{id}"), patient(Some(&id), i))]
                };
                for (path, body) in resources {
                    let response = client
                        .put(format!("{root}/fhir/{path}"))
                        .header("Content-Type", "application/fhir+json")
                        .header("Prefer", "return=minimal")
                        .body(body)
                        .send()
                        .await;
                    if !response.is_ok_and(|r| r.status().is_success()) {
                        failures += 1;
                    }
                }
            }
            failures
        }));
    }
    let mut failures = 0;
    for task in tasks {
        failures += task.await.unwrap_or(1);
    }
    let per_patient = if args.scenario == "seed-program" {
        8
    } else {
        1
    };
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} {} resources ({} patients) in {seconds:.1}s, {:.0} resources/s ({failures} failures)",
        args.scenario,
        args.count * per_patient,
        args.count,
        (args.count * per_patient) as f64 / seconds
    );
}
