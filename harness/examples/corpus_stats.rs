//! Replays a directory of inputs through one target's body and prints what the inputs did in
//! total (for example the forged messages a `hostile_storage` corpus tried, and how many were
//! delivered outside their VM — always 0, or the run stops at the finding).
//!
//! ```text
//! cargo run -p vir-harness --example corpus_stats -- hostile_storage fuzz/corpus/hostile_storage
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;

use vir_harness::corpus::files_in;
use vir_harness::{Outcome, Target};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((name, dirs)) = args.split_first() else {
        eprintln!("usage: corpus_stats <target> <dir>...");
        return ExitCode::from(2);
    };
    let Some(target) = Target::from_name(name) else {
        eprintln!("unknown target {name}");
        return ExitCode::from(2);
    };
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let mut add = |k: &str, v: u64| *totals.entry(k.to_owned()).or_default() += v;
    for dir in dirs {
        let files = match files_in(std::path::Path::new(dir)) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("{dir}: {e}");
                return ExitCode::from(2);
            }
        };
        for f in files {
            let Ok(data) = std::fs::read(&f) else {
                eprintln!("{}: unreadable", f.display());
                return ExitCode::from(2);
            };
            add("inputs", 1);
            match target.run(&data) {
                Ok(Outcome::Decode(r)) => {
                    add("decodes attempted", u64::from(r.attempted));
                    add("decodes succeeded", u64::from(r.decoded));
                }
                Ok(Outcome::Calls(r)) => {
                    add("steps", u64::from(r.steps));
                    add("not executed", u64::from(r.not_executed));
                    for (s, n) in r.statuses {
                        add(&format!("status {s:?}"), u64::from(n));
                    }
                }
                Ok(Outcome::Toctou(r)) => {
                    add("watched reads", r.watched_reads as u64);
                    add("flipped", u64::from(r.flipped));
                    match r.status {
                        Some(s) => add(&format!("status {s:?}"), 1),
                        None => add("not executed", 1),
                    }
                }
                Ok(Outcome::Storage(r)) => {
                    add("forged tried", r.forged_tried);
                    add("blocked", r.blocked);
                    add("delivered to own set-up vectors", r.delivered_own);
                    add("masked/dropped/not sent", r.other);
                    add("delivered outside", r.delivered_outside);
                    add("guest actions", r.guest_actions);
                }
                Err(finding) => {
                    eprintln!("{}: {finding}", f.display());
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    for (k, v) in totals {
        println!("{k}: {v}");
    }
    ExitCode::SUCCESS
}
