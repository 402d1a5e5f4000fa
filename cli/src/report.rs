//! The table `databelt invoke` prints for a run.

use anyhow::{Result, anyhow};
use databelt_host::schema::postcard_to_json;
use databelt_net::workflow::{RunReport, Runner};

fn ms(micros: u64) -> String {
    format!("{:.1}", micros as f64 / 1000.0)
}

/// Print one run's report as a table: per step where its input was found,
/// bytes, timings and hand-offs; then reads, SLO violations, state
/// operations, cleanup and the final outputs.
pub fn print(report: &RunReport, runner: &Runner) -> Result<()> {
    println!(
        "run {}  workflow {}  policy {}  fusion {}  total {} ms",
        report.run_id,
        report.workflow,
        report.policy,
        if report.fusion { "on" } else { "off" },
        ms(report.total_micros)
    );
    println!(
        "  {:<12} {:<8} {:<26} {:>10} {:>8} {:>8} {:>10}  handed on",
        "step", "node", "input found", "in bytes", "read ms", "run ms", "out bytes"
    );
    for line in &report.steps {
        let r = &line.result;
        let found = if r.inputs.is_empty() {
            "inline".to_string()
        } else {
            r.inputs.iter().map(|i| format!("{}@{}", i.tier.name(), i.node)).collect::<Vec<_>>().join(",")
        };
        let in_bytes: u64 = r.inputs.iter().map(|i| i.bytes).sum();
        let handed = if r.handoffs.is_empty() {
            "(final)".to_string()
        } else {
            r.handoffs
                .iter()
                .map(|h| {
                    let mut s = format!(
                        "{}→{} {} B {} ms/{} ms",
                        h.successors.join("+"),
                        h.locator.node,
                        h.bytes_moved,
                        ms(h.micros),
                        h.tmax_ms
                    );
                    if h.slo_violated {
                        s += " SLO-VIOLATED";
                    }
                    if let Some(e) = &h.push_failed {
                        s += &format!(" (push failed: {e})");
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        println!(
            "  {:<12} {:<8} {:<26} {:>10} {:>8} {:>8} {:>10}  {}",
            line.step,
            r.node,
            found,
            in_bytes,
            ms(r.read_micros),
            ms(r.invoke_micros),
            r.output_bytes,
            handed
        );
    }
    let reads = report.reads;
    let total_reads = reads.local + reads.locator + reads.neighbour + reads.cloud + reads.misses;
    println!(
        "  local availability {:.1}% ({} of {} reads; locator {}, neighbour {}, cloud {})  SLO violations {} of {} remote hand-offs ({} transfers)  bytes moved {}",
        report.local_availability() * 100.0,
        reads.local,
        total_reads,
        reads.locator,
        reads.neighbour,
        reads.cloud,
        report.slo_violations,
        report.remote_handoffs,
        report.transfers,
        report.bytes_moved
    );
    let k = &report.counters;
    println!(
        "  state ops: store {} ({} B), sandbox {} ({} B); remote requests {} ({} B); time in state {} ms",
        k.store_ops,
        k.store_bytes,
        k.sandbox_ops,
        k.sandbox_bytes,
        k.remote_requests,
        k.remote_bytes,
        ms(k.state_micros)
    );
    let c = &report.cleanup;
    if c.nodes.is_empty() {
        println!("  state kept (--keep-state)");
    } else {
        println!(
            "  cleaned up {} states on {} nodes{}",
            c.deleted,
            c.nodes.len(),
            if c.unreachable.is_empty() {
                String::new()
            } else {
                format!("; unreachable: {}", c.unreachable.join(", "))
            }
        );
    }
    for (step, bytes) in &report.outputs {
        let schema = runner.output_schema(step).ok_or_else(|| anyhow!("no step `{step}`"))?;
        let mut value = postcard_to_json(schema, bytes)?;
        if abbreviate(&mut value) {
            println!("  output of {step} ({} bytes, long lists cut): {}", bytes.len(), serde_json::to_string(&value)?);
        } else {
            println!("  output of {step}: {}", serde_json::to_string(&value)?);
        }
    }
    Ok(())
}

/// The run report as JSON, each step's output decoded through its output
/// schema (`outputs: [{"step": …, "output": <JSON>}]`) instead of the raw
/// postcard bytes. An output that has no JSON form keeps its bytes, under
/// `bytes`, with the reason.
pub fn json(report: &RunReport, runner: &Runner) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(report)?;
    let outputs: Vec<serde_json::Value> = report
        .outputs
        .iter()
        .map(|(step, bytes)| {
            let decoded = runner
                .output_schema(step)
                .ok_or_else(|| anyhow!("no step `{step}`"))
                .and_then(|schema| Ok(postcard_to_json(schema, bytes)?));
            match decoded {
                Ok(output) => serde_json::json!({"step": step, "output": output}),
                Err(e) => serde_json::json!({"step": step, "bytes": bytes, "error": e.to_string()}),
            }
        })
        .collect();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("outputs".into(), serde_json::Value::Array(outputs));
    }
    Ok(value)
}

/// Cut every list longer than 16 items to its first 8 and a note of how
/// many were left out; true when something was cut.
fn abbreviate(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Array(items) if items.len() > 16 => {
            let more = items.len() - 8;
            items.truncate(8);
            items.push(Value::String(format!("… {more} more")));
            true
        }
        Value::Array(items) => items.iter_mut().fold(false, |cut, v| abbreviate(v) | cut),
        Value::Object(map) => map.values_mut().fold(false, |cut, v| abbreviate(v) | cut),
        _ => false,
    }
}
